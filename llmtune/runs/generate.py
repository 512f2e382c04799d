"""`llmtune generate RUN --input prompts.jsonl|.txt --out answers.jsonl`: answer a file of
prompts through the generation core, in batches of similar length (left-padded).

The input is read in windows of a few batches; each window's answers are written to --out in
input order once the window is done, so an interruption loses at most one window, and a rerun
keeps the rows already in --out and answers only the rest (each row is checked to answer the
same prompt). A malformed input line stops the run with file:line after the rows before it
are written. Sampled rows draw with seed + input line, so a resumed or re-batched run gives
the rows it would have given.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from llmtune.errors import DataError, UserError
from llmtune.runs.prompt_rows import PromptRow, check_input, count_rows, read_rows

if TYPE_CHECKING:
    from llmtune.generation.params import SamplingParams
    from llmtune.runs.inference import InferenceModel

WINDOW_BATCHES = 4
"""Input rows read (and length-sorted) at a time, in batches."""


def generate_file(target: str, inp: Path, out: Path, params: "SamplingParams", *, batch_size: int,
                  system: str | None, reporter, trust_remote_code: bool = False) -> dict:
    from llmtune.jsonl_out import ResumableJsonl
    from llmtune.runs.inference import open_causal_lm

    inp, out = Path(inp), Path(out)
    check_input(inp)
    if out.resolve() == inp.resolve():
        raise UserError(f"--out {out}: is the input file; write the answers to another file")
    writer = ResumableJsonl(out, key="line")
    if writer.torn:
        reporter.warn(f"--out {out}: its last line was cut off (the job was killed mid-write); dropped it")
    lm = open_causal_lm(target, verb="generate", reporter=reporter, trust_remote_code=trust_remote_code)
    reporter.log(lm.describe())
    total = count_rows(inp)
    kept = len(writer.done)
    if kept:
        reporter.log(f"--out {out}: keeping the {kept} answers already there; answering the other {total - kept} rows")
    stats = {"generated": 0, "tokens": 0, "seconds": 0.0}
    with writer, reporter.progress(total, "generate", completed=kept) as advance:
        for window in _windows(read_rows(inp), batch_size * WINDOW_BATCHES):
            todo = [row for row in window if _still_to_do(row, writer, out)]
            _answer(lm, todo, params, system, batch_size, writer, stats, inp)
            advance(len(window))
    seconds = stats["seconds"]
    return {"input": str(inp), "out": str(out), "rows": total, "kept": kept, "generated": stats["generated"],
            "tokens": stats["tokens"], "seconds": round(seconds, 3),
            "tokens_per_s": round(stats["tokens"] / seconds, 1) if seconds else None}


def _windows(rows: Iterator[PromptRow], size: int) -> Iterator[list[PromptRow]]:
    """Rows in windows; a DataError from the reader comes out after the window before it."""
    window: list[PromptRow] = []
    try:
        for row in rows:
            window.append(row)
            if len(window) == size:
                yield window
                window = []
    except DataError:
        if window:
            yield window
        raise
    if window:
        yield window


def _still_to_do(row: PromptRow, writer, out: Path) -> bool:
    done = writer.done.get(row.line)
    if done is None:
        return True
    if done.get("prompt") != row.prompt:
        raise UserError(f"--out {out}: its answer for input line {row.line} answers another prompt, so the input "
                        f"changed since it was written; write to a new --out, or delete {out} to start over")
    return False


def _answer(lm: "InferenceModel", rows: list[PromptRow], params: "SamplingParams", system: str | None,
            batch_size: int, writer, stats: dict, inp: Path) -> None:
    """Answer `rows` and write them; a prompt the context cannot hold stops the run with its
    file:line once the rows before it are written."""
    from llmtune.generation.params import Request

    requests, too_long = [], None
    for row in rows:
        messages = ([{"role": "system", "content": system}] if system else []) + row.messages
        ids = lm.prompt_ids(messages)
        if len(ids) >= lm.context_length:
            too_long = DataError(f"{inp}:{row.line}: the prompt is {len(ids)} tokens; the model's context holds "
                                 f"{lm.context_length} with room for at least one new token: shorten it or drop "
                                 f"the row (the answers before it are in --out; rerun to go on)")
            break
        requests.append(Request(ids, replace(params, seed=params.seed + row.line)))
    if requests:
        started = time.perf_counter()
        done = lm.engine.complete(requests, batch_size=batch_size)
        stats["seconds"] += time.perf_counter() - started
        for row, c in zip(rows, done):
            writer.append([{"line": row.line, **({"id": row.id} if row.id is not None else {}), "prompt": row.prompt,
                            "output": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                            "completion_tokens": c.completion_tokens}])
            stats["generated"] += 1
            stats["tokens"] += c.completion_tokens
        writer.flush()
    if too_long is not None:
        raise too_long
