"""`llmtune export RUN --format gguf [--quant TYPE]`: one GGUF file for llama.cpp and Ollama,
with an Ollama Modelfile beside it.

The run's model is merged first (LoRA, DoRA, IA3, and LoRA policies fold into the base
weights; full and frozen-head runs already are plain models), then written (gguf_tensors:
weights and architecture keys; gguf_tokenizer: vocabulary and chat template), then read back
and compared with the run (gguf_parity). The folder is written under a temporary name and
renamed into place only after the comparison passed: a failed check (exit 1, with the
figures) leaves nothing that looks like a finished export.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.atomic import replacing_folder
from llmtune.errors import UserError
from llmtune.runs.export import _check_out, template_notes
from llmtune.runs.gguf_tensors import Written, arch_for, check_quant, file_type, write_tensors
from llmtune.runs.gguf_parity import RunSide
from llmtune.runs.gguf_tokenizer import TokenizerFields, add_to_writer, describe, tokenizer_fields
from llmtune.runs.open import Target, open_run

if TYPE_CHECKING:
    from llmtune.console import Reporter


def export_gguf(run_dir: Path, out: Path, *, quant: str, overwrite: bool, reporter: Reporter) -> dict[str, Any]:
    quant = check_quant(quant)
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; pass the folder `llmtune train` wrote")
    target = open_run(run_dir)
    refuse_unexportable(target, run_dir, out)
    template_notes(run_dir, target.final, reporter)
    _check_out(out, run_dir, overwrite)
    started = time.perf_counter()
    run = merged_model(target)
    name = f"{_safe_stem(run_dir)}-{quant}.gguf"
    with replacing_folder(out) as tmp:
        tmp.mkdir()
        reporter.log(f"writing {name} ({quant}) from the {target.method.name} run {run_dir}")
        written, fields, report = write_checked(tmp / name, run, quant, reporter)
        template = _modelfile(tmp, name, target, run.tok, run.body.config, run_dir, quant)
        result = _result(run_dir, out, name, target, quant, written, fields, report, template,
                         time.perf_counter() - started, (tmp / name).stat().st_size)
        _write_info(tmp, target, result)
    reporter.log(result["message"])
    return result


def refuse_unexportable(target: Target, run_dir: Path, out: Path) -> None:
    """Exit 2, saying what would work, for runs whose result no GGUF file can hold."""
    from llmtune.methods.registry import all_methods

    method, task = target.method, target.recipe.data.task
    kind = method.result_kind(task)
    if kind == "classifier":
        raise UserError(f"{run_dir} holds a classification model (llmtune's pooled head over the body), not a causal "
                        f"LM; a GGUF file for llama.cpp and Ollama holds a text generator. Export it with "
                        f"`llmtune export {run_dir} --out {out} --merge` (a transformers folder) and score with "
                        f"`llmtune eval {run_dir}`")
    if kind == "reward":
        raise UserError(f"{run_dir} holds a reward model (a one-score sequence classifier), not a causal LM: it "
                        f"scores text and generates none, so it has no GGUF form. Export it with "
                        f"`llmtune export {run_dir} --out {out}` (a transformers folder), or use it as the reward "
                        f"model of an rl recipe")
    if kind == "encoder":
        raise UserError(f"{run_dir} holds a sentence encoder trained for retrieval, not a causal LM: it embeds "
                        f"text and generates none, so llama.cpp and Ollama have nothing to run. Export it with "
                        f"`llmtune export {run_dir} --out {out}` (a transformers folder) or use it as "
                        f"`llmtune index --encoder {run_dir}`")
    if not method.can_merge:
        mergeable = sorted(n for n, m in all_methods().items() if m.can_merge and set(m.tasks) - {"classification"})
        raise UserError(f"method {method.name!r} cannot be folded into the base weights (what it trains is extra "
                        f"modules or inputs), and a GGUF file holds only a plain model's weights. Use the "
                        f"adapter-only export (`llmtune export {run_dir} --out {out}`; llmtune loads it onto the "
                        f"base), or retrain with a mergeable method ({', '.join(mergeable)}) for a GGUF file")


def merged_model(target: Target) -> RunSide:
    """The run's causal LM with its method folded in (float32, eval mode), with the logits the
    unmerged model gives on the sample prompts, so the merge itself is checked too."""
    import torch

    from llmtune.runs.gguf_parity import logits_of, sample_ids

    tok = target.tokenizer()
    model = target.trained_model().body.to(torch.float32).eval()
    prompts = sample_ids(tok, _context(model.config))
    logits = logits_of(model, prompts)
    return RunSide(prompts, logits, target.method.merge(model).eval(), tok)


def _context(config) -> int:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048


def _safe_stem(run_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_dir.resolve().name).strip("-.") or "model"


def write_checked(path: Path, run: RunSide, quant: str, reporter: Reporter | None = None
                  ) -> tuple[Written, TokenizerFields, dict]:
    """Write `run.body` (a plain transformers causal LM) and `run.tok` to `path`, then compare the
    file with the run: (what was written, the tokenizer fields, the parity report). Raises
    UserError (exit 2) for what the writer does not cover, ParityFailed (exit 1) when the file
    differs."""
    from llmtune.runs.gguf_parity import check

    arch = arch_for(run.body.config)
    fields = tokenizer_fields(run.tok, run.body.config.vocab_size)
    written = _write_file(path, run.body, arch, fields, quant)
    if reporter is not None:
        reporter.log("reading the file back with transformers' GGUF reader to compare it with the run")
    return written, fields, check(path, run, written.rounded, quant)


def plain_run(body, tok) -> RunSide:
    """A plain model as the run side (nothing to merge): its own logits are the reference."""
    from llmtune.runs.gguf_parity import logits_of, sample_ids

    body = body.eval()
    prompts = sample_ids(tok, _context(body.config))
    return RunSide(prompts, logits_of(body, prompts), body, tok)


def _write_file(path: Path, body, arch, fields, quant: str) -> Written:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch.gguf_name)
    writer.add_name(path.stem)
    writer.add_description("written by llmtune export --format gguf")
    arch.write_keys(writer, body.config)
    writer.add_file_type(file_type(quant))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_to_writer(writer, fields)
    written = write_tensors(writer, body, arch, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


def _modelfile(folder: Path, name: str, target: Target, tok, config, run_dir: Path, quant: str):
    from llmtune.atomic import write_text
    from llmtune.runs.modelfile import chat_template, modelfile_text, plain_template

    if _trained_plain(run_dir):
        template = plain_template(tok, target.recipe.data.prompt_template)
    else:
        template = chat_template(tok)
    write_text(folder / "Modelfile", modelfile_text(name, template, _context(config), str(run_dir), quant))
    return template


def _trained_plain(run_dir: Path) -> bool:
    from llmtune.train.manifest import read_manifest
    from llmtune.train.run_dir import RunDir

    summary = (read_manifest(RunDir(run_dir)) or {}).get("data_summary") or {}
    return summary.get("prompt_style") == "plain"


def _result(run_dir: Path, out: Path, name: str, target: Target, quant: str, written, fields, report: dict,
            template, seconds: float, size: int) -> dict[str, Any]:
    drift = report["drift"]
    fallback = f"; {len(written.fallback_f16)} weight(s) kept in f16 (rows not a multiple of the block)" \
        if written.fallback_f16 else ""
    message = (f"GGUF export of {target.method.name} ({quant}, {size / 2**20:.1f} MiB) written to {out / name}, with "
               f"an Ollama Modelfile; checked against the run on {report['prompts']} prompts: next-token mean KL "
               f"divergence {drift['mean_kl']:.2g} nats (allowed {report['tolerance']['drift']:g}), max |logit "
               f"difference| {drift['max_abs_logit_diff']:.3g}, top-1 token equal at {drift['top1_agreed']} of "
               f"{drift['positions']} positions; "
               f"tokenizer ids equal on every sample string{fallback}. "
               f"{template.note if template.text else 'Modelfile without TEMPLATE: ' + template.note}")
    return {"run_dir": str(run_dir), "out": str(out), "method": target.method.name, "form": "gguf",
            "format": "gguf", "quant": quant, "file": name, "bytes": size, "tensor_types": written.types,
            "fallback_f16": written.fallback_f16, "parity": report, "tokenizer": describe(fields),
            "modelfile_template": template.text is not None, "stops": template.stops,
            "seconds": round(seconds, 1), "files": sorted([name, "Modelfile", "llmtune.json"]), "message": message}


def _write_info(folder: Path, target: Target, result: dict) -> None:
    """llmtune.json: the run's own record plus what this export is (so --overwrite knows it)."""
    from llmtune.atomic import write_json

    info = dict(target.info)
    info["export"] = {"from_run": str(Path(result["run_dir"]).resolve()), "merged": True, "format": "gguf",
                      "quant": result["quant"], "file": result["file"], "parity": result["parity"],
                      "tokenizer": result["tokenizer"],
                      "loads_with": "llama.cpp (llama-cli -m FILE), Ollama (ollama create NAME -f Modelfile), "
                                    "transformers (from_pretrained(folder, gguf_file=FILE))"}
    write_json(folder / "llmtune.json", info)
