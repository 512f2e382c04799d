"""`llmtune export`: turn a run's final/ into something other tools load.

Two forms:
- merged (`--merge`, methods with `can_merge`): the method is folded into the base
  weights and written as a plain transformers folder (model + tokenizer) that loads with
  `AutoModel*.from_pretrained` alone, no llmtune or peft. A classification head that a stock
  class reproduces (a decoder with pooling last: models/stock_head.py) is written as that
  `*ForSequenceClassification` class, checked by scoring sample inputs both ways; any other
  head goes beside the body as head.safetensors with llmtune.json saying how to pool.
- adapter-only (the default, and the only form for methods that cannot merge): what the
  method saved (only what trained, plus head, tokenizer and llmtune.json), copied out; a
  causal soft prompt also in peft's prompt-tuning format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmtune.atomic import replacing_folder
from llmtune.errors import UserError
from llmtune.models.public_name import publish_base_name
from llmtune.models.task_model import INFO_FILE, write_info
from llmtune.runs.open import open_run


def export_run(run_dir: Path, out: Path, *, merge: bool, overwrite: bool, reporter) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; pass the folder `llmtune train` wrote")
    target = open_run(run_dir)
    r, method, final = target.recipe, target.method, target.final
    template_notes(run_dir, final, reporter)
    out = Path(out)
    _check_out(out, run_dir, overwrite)
    if not method.trains:
        raise UserError(f"{run_dir}: method {method.name!r} trained nothing, so there is nothing to export; "
                        f"its model is the base model, {r.model.name}")
    if merge and not method.can_merge:
        raise UserError(_cannot_merge(method, r.model.name, run_dir, out))

    with replacing_folder(out) as tmp:
        if merge:
            files, message = _write_merged(target, tmp, run_dir)
            form = "merged"
        else:
            files = _write_adapter_only(final, tmp, run_dir)
            form = "adapter-only"
            message = _adapter_only_message(method, r.model.name, run_dir, final)
            if method.peft_form:
                files, message = _add_peft_form(target, tmp, run_dir, message)
    reporter.log(message)
    return {"run_dir": str(run_dir), "out": str(out), "method": method.name, "form": form,
            "files": files, "message": message}


def template_notes(run_dir: Path, final: Path, reporter) -> None:
    """The export carries final/'s tokenizer, chat template included: say so when that template
    is not the one training used, or when training did not use a chat template at all."""
    from llmtune.models.chat_template import check_saved_tokenizer
    from llmtune.train.manifest import read_manifest
    from llmtune.train.run_dir import RunDir

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
    if target in run_dir.resolve().parents:
        # --out replaces the folder it names, so a folder holding the run would delete it.
        raise UserError(f"--out {out}: holds the run being exported ({run_dir}), which writing the export "
                        f"there would delete; pick a folder outside it")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise UserError(f"--out {out}: already exists and is not empty; pass --overwrite to replace it "
                        f"or choose another folder")
    if not is_export_dir(out):
        # --overwrite deletes; as with `train --overwrite`, only ever delete what llmtune wrote.
        what = "is a file" if not out.is_dir() else "holds files but is not an llmtune export (no llmtune.json " \
                                                    "recording an export)"
        raise UserError(f"--overwrite: --out {out} {what}; refusing to delete it. Choose a new or empty "
                        f"folder for --out, or remove {out} yourself if you mean to replace it")


def is_export_dir(path: Path) -> bool:
    """A folder `llmtune export` wrote: its llmtune.json records the export (_stamp_info)."""
    try:
        info = json.loads((Path(path) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and isinstance(info.get("export"), dict)


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


def _write_adapter_only(final: Path, tmp: Path, run_dir: Path) -> list[str]:
    shutil.copytree(final, tmp)
    publish_base_name(tmp)  # runs saved before adapters named their base publicly
    _stamp_info(tmp, run_dir, merged=False)
    return sorted(p.name for p in tmp.iterdir())


def _add_peft_form(target, tmp: Path, run_dir: Path, message: str) -> tuple[list[str], str]:
    """Methods that have a peft equivalent (soft prompts: prompt tuning) add it beside their own files."""
    method, causal = target.method, target.recipe.data.task != "classification"
    if causal and method.to_peft(target.trained_model().body, tmp, causal=causal):
        publish_base_name(tmp)
        _stamp_info(tmp, run_dir, merged=False, loads_with="peft PeftModel.from_pretrained(base, folder)")
        message = (f"{message}; the folder also holds the prompt in peft's prompt-tuning format "
                   f"(adapter_config.json, adapter_model.safetensors): PeftModel.from_pretrained(base, folder) "
                   f"loads it, its logits carry the {method.virtual_tokens} virtual positions first")
    else:
        message = (f"{message}; no peft form for a classification soft prompt (peft would hand a stock "
                   f"classifier inputs_embeds, and no stock class is llmtune's pooled head)")
    return sorted(p.name for p in tmp.iterdir()), message


def _write_merged(target, tmp: Path, run_dir: Path) -> tuple[list[str], str]:
    from llmtune.runs.export_classifier import reference_logits, write_stock_classifier

    final, method, base = target.final, target.method, target.recipe.model.name
    model, tok = target.trained_model(), target.tokenizer()
    classification = target.recipe.data.task == "classification"
    reference = reference_logits(model, tok) if classification else None
    body = method.merge(model.body)
    tmp.mkdir(parents=True)
    stock = write_stock_classifier(model, body, tok, target.labels, tmp, reference) if classification else None
    if stock is None or stock.cls is None:
        body.save_pretrained(tmp)
        model.save_head(tmp)
    tok.save_pretrained(tmp)
    shutil.copy2(final / INFO_FILE, tmp / INFO_FILE)
    merged = f"merged {method.name} into the base weights of {base}"
    if stock is None:
        pooling = target.info.get("pooling") or "mean"
        loads_with = "AutoModelForCausalLM.from_pretrained(folder)" if target.recipe.data.task != "retrieval" else \
            f"AutoModel.from_pretrained(folder), {pooling}-pooled and L2-normalised (a sentence encoder)"
        message = f"{merged}: a plain transformers folder (load it with transformers' {loads_with})"
    elif stock.cls is not None:
        loads_with = "AutoModelForSequenceClassification.from_pretrained(folder)"
        message = (f"{merged}: a {stock.cls} folder, its score layer the trained head; transformers' {loads_with} "
                   f"loads it and scores as llmtune does (checked on sample inputs: max |logit difference| "
                   f"{stock.max_abs_diff:.1e})")
    else:
        loads_with = "AutoModel.from_pretrained(folder) + head.safetensors on the pooled hidden states"
        message = (f"{merged}: the body is a plain transformers folder (AutoModel.from_pretrained), but the head "
                   f"stays head.safetensors (weight, bias), because {stock.why_not}; apply it to the "
                   f"{model.pooling}-pooled last hidden states, as llmtune.json records")
    _stamp_info(tmp, run_dir, merged=True, loads_with=loads_with)
    return sorted(p.name for p in tmp.iterdir()), message


def _stamp_info(folder: Path, run_dir: Path, merged: bool, loads_with: str | None = None) -> None:
    path = folder / INFO_FILE
    info = json.loads(path.read_text()) if path.exists() else {}
    info["export"] = {"from_run": str(Path(run_dir).resolve()), "merged": merged}
    if loads_with:
        info["export"]["loads_with"] = loads_with
    write_info(folder, info)
