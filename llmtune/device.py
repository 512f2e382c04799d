"""The device a model runs on when nothing says otherwise: the first GPU if there is one, else
the CPU. Imports torch only when called."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def default_device() -> "torch.device":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# CPU instruction sets that multiply bf16 natively (others emulate it, slower than fp32).
BF16_INSTRUCTIONS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def cpu_bf16_instructions() -> list[str]:
    """The instruction sets this CPU multiplies bf16 with natively (names as Intel/AMD write
    them), read from /proc/cpuinfo's flags; empty where there are none or no such file."""
    from pathlib import Path

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [name for flag, name in BF16_INSTRUCTIONS.items() if flag in flags]
