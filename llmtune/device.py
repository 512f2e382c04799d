"""The device a model runs on when nothing says otherwise: the first GPU if there is one, else
the CPU. Imports torch only when called."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def default_device() -> "torch.device":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
