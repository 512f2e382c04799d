"""`llmtune export`: turn a run's final/ into something other tools load.

Two forms:
- merged (`--merge`, methods with `can_merge`): the method is folded into the base
  weights and written as a plain transformers folder (model + tokenizer) that loads with
  `AutoModel*.from_pretrained` alone, no llmtune or peft. A classification head is not
  part of any transformers class here, so it goes beside the model as head.safetensors
  (weight, bias) with llmtune.json saying how to pool.
- adapter-only (the default, and the only form for methods that cannot merge): what the
  method saved (only what trained, plus head, tokenizer and llmtune.json), copied out.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from llmtune.errors import UserError
from llmtune.models.task_model import INFO_FILE, write_info


def export_run(run_dir: Path, out: Path, *, merge: bool, overwrite: bool, reporter) -> dict:
    from llmtune.evaluate.runner import load_target
    from llmtune.methods.registry import get_method

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; pass the folder `llmtune train` wrote")
    loaded, final = load_target(run_dir, [])
    r = loaded.recipe
    template_notes(run_dir, final, reporter)
    method = get_method(r.method.name)(r.method)
    out = Path(out)
    _check_out(out, run_dir, overwrite)
    if merge and not method.can_merge:
        raise UserError(_cannot_merge(method, r.model.name, run_dir, out))

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if merge:
            files = _write_merged(loaded, final, method, tmp, run_dir)
            form = "merged"
            message = (f"merged {method.name} into the base weights of {r.model.name}: a plain transformers "
                       f"folder (load it with transformers' {_loader_hint(r.data.task)}.from_pretrained)")
        else:
            files = _write_adapter_only(final, tmp, run_dir)
            form = "adapter-only"
            message = _adapter_only_message(method, r.model.name, run_dir, final)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    reporter.log(message)
    return {"run_dir": str(run_dir), "out": str(out), "method": method.name, "form": form,
            "files": files, "message": message}


def template_notes(run_dir: Path, final: Path, reporter) -> None:
    """The export carries final/'s tokenizer, chat template included: say so when that template
    is not the one training used, or when training did not use a chat template at all."""
    from llmtune.models.chat_template import check_saved_tokenizer
    from llmtune.train.run_dir import RunDir, read_manifest

    check_saved_tokenizer(final, reporter, "export")
    summary = (read_manifest(RunDir(Path(run_dir))) or {}).get("data_summary") or {}
    if summary.get("prompt_style") == "plain":
        reporter.warn("export: this run trained alpaca rows with data.prompt_template (data.prompt_style: plain), "
                      "not with the chat template the exported tokenizer carries; prompt the exported model with "
                      "that same prompt text, not through its chat template")


def _check_out(out: Path, run_dir: Path, overwrite: bool) -> None:
    target, final = out.resolve(), (run_dir / "final").resolve()
    if target in (run_dir.resolve(), final) or final in target.parents:
        raise UserError(f"--out {out}: cannot export into the run's own final/; pick another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"--out {out}: already exists and is not empty; pass --overwrite to replace it "
                        f"or choose another folder")


def _cannot_merge(method, base: str, run_dir: Path, out: Path) -> str:
    from llmtune.methods.registry import all_methods

    mergeable = sorted(n for n, m in all_methods().items() if m.can_merge)
    return (f"method {method.name!r} cannot be merged into the base weights: what it trains is extra "
            f"modules or inputs, not a change to {base}'s weight matrices, so no plain transformers folder "
            f"can hold it. Drop --merge for an adapter-only export "
            f"(`llmtune export {run_dir} --out {out}`; llmtune loads it onto {base}), or retrain with a "
            f"mergeable method ({', '.join(mergeable)}) if you need a plain transformers model.")


def _adapter_only_message(method, base: str, run_dir: Path, final: Path) -> str:
    if method.body_source(base, final) != base:
        same = "; --merge gives the same model" if method.can_merge else ""
        return (f"{method.name}: the run's final/ already holds a whole model; copied it as it is "
                f"(a plain transformers folder{same})")
    if method.can_merge:
        return (f"adapter-only export of {method.name}: only the trained parameters, to load onto {base} "
                f"(with peft or llmtune); pass --merge for a plain transformers folder without peft")
    return (f"adapter-only export: method {method.name!r} cannot be merged into the base weights, so the "
            f"folder holds only what it trained, to load onto {base} with llmtune")


def _loader_hint(task: str) -> str:
    return "AutoModel" if task == "classification" else "AutoModelForCausalLM"


def _write_adapter_only(final: Path, tmp: Path, run_dir: Path) -> list[str]:
    shutil.copytree(final, tmp)
    _stamp_info(tmp, run_dir, merged=False)
    return sorted(p.name for p in tmp.iterdir())


def _write_merged(loaded, final: Path, method, tmp: Path, run_dir: Path) -> list[str]:
    from llmtune.evaluate.runner import load_trained

    _, model, tok, _ = load_trained(loaded, final)
    body = method.merge(model)
    tmp.mkdir(parents=True)
    body.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    model.save_head(tmp)
    shutil.copy2(final / INFO_FILE, tmp / INFO_FILE)
    _stamp_info(tmp, run_dir, merged=True)
    return sorted(p.name for p in tmp.iterdir())


def _stamp_info(folder: Path, run_dir: Path, merged: bool) -> None:
    path = folder / INFO_FILE
    info = json.loads(path.read_text()) if path.exists() else {}
    info["export"] = {"from_run": str(Path(run_dir).resolve()), "merged": merged}
    write_info(folder, info)
