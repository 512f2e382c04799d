"""`llmtune generate` against what a user writes with plain transformers, side by side in one run.

SmolLM2-135M-Instruct (the built-in `smollm2-135m`, dequantized to fp32), the first N alpaca-demo
prompts of recipes/data/alpaca_tiny.json (default all 64) as one user turn through the chat
template, 64 new tokens, greedy:

- llmtune: the real command, `python -m llmtune generate smollm2-135m --input prompts.jsonl
  --out answers.jsonl --max-new-tokens 64 --batch-size 16 --json`, in its own process; its
  figure is the one it reports itself (generated tokens per second of generation, model loading
  not counted). No warm-up: its first batch pays torch's one-off start-up costs.
- transformers: `AutoModelForCausalLM.from_pretrained` on the same converted folder, then a
  loop calling `model.generate(**enc, max_new_tokens=64, do_sample=False)` one prompt at a time
  (in this process, after one untimed warm-up generation); the loop is timed, loading is not.

Tokens are the tokens generated before the end-of-sequence token, counted the same on both
sides. Parity: each answer's text, its prompt's token count and its answer's token count are
compared; for a row whose text differs (at most --analyze-max of them), llmtune's engine
decodes that prompt alone, to tell batching's share from the decoder's, and the first token
where they part is printed.

    /work/locks/exclusive python scripts/bench_generate.py [--prompts 64] [--new-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "smollm2-135m"


def prompts(n: int) -> list[dict]:
    rows = json.loads((ROOT / "recipes" / "data" / "alpaca_tiny.json").read_text())[:n]
    return [{"instruction": r["instruction"], "input": r["input"]} for r in rows]


def run_llmtune(rows: list[dict], new_tokens: int, batch_size: int) -> tuple[dict, list[dict]]:
    """`llmtune generate` as a user runs it; its --json summary and its answer rows."""
    folder = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    inp, out = folder / "prompts.jsonl", folder / "answers.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "llmtune", "generate", MODEL, "--input", str(inp), "--out", str(out),
            "--max-new-tokens", str(new_tokens), "--batch-size", str(batch_size), "--json"]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        sys.exit(f"llmtune generate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    summary["process_s"] = round(time.perf_counter() - started, 1)
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, sorted(answers, key=lambda r: r["line"])


def load_transformers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.models.load import resolve_source

    folder = resolve_source(MODEL)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    return tok, model, stops


def hf_generate(tok, model, stops: set[int], row: dict, new_tokens: int) -> tuple[int, list[int]]:
    """What a user writes: render, generate, cut at the end-of-sequence token."""
    import torch

    from llmtune.data.prompt_style import alpaca_user_turn

    messages = [{"role": "user", "content": alpaca_user_turn(row["instruction"], row["input"])}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    cut = next((i for i, t in enumerate(new) if t in stops), len(new))
    return enc["input_ids"].shape[1], new[:cut]


def run_transformers(rows: list[dict], new_tokens: int) -> tuple[dict, list[dict]]:
    tok, model, stops = load_transformers()
    hf_generate(tok, model, stops, rows[0], 4)  # warm-up, untimed: torch's one-off costs
    answers = []
    started = time.perf_counter()
    for row in rows:
        prompt_tokens, ids = hf_generate(tok, model, stops, row, new_tokens)
        answers.append({"prompt_tokens": prompt_tokens, "ids": ids,
                        "output": tok.decode(ids, skip_special_tokens=True)})
    seconds = time.perf_counter() - started
    tokens = sum(len(a["ids"]) for a in answers)
    return {"tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}, answers


def first_difference(a: list[int], b: list[int]) -> int | None:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return at if at is not None or len(a) == len(b) else min(len(a), len(b))


def analyze(rows: list[dict], differing: list[int], theirs: list[dict], new_tokens: int) -> list[dict]:
    """Each differing row decoded alone by llmtune's engine: does batching explain it?"""
    from llmtune.data.prompt_style import alpaca_user_turn
    from llmtune.generation.params import Request, SamplingParams
    from llmtune.runs.inference import open_causal_lm

    lm = open_causal_lm(MODEL, verb="generate")
    found = []
    for i in differing:
        r = rows[i]
        ids = lm.prompt_ids([{"role": "user", "content": alpaca_user_turn(r["instruction"], r["input"])}])
        alone = lm.engine.complete([Request(ids, SamplingParams(max_new_tokens=new_tokens))])[0].token_ids
        found.append({"row": i, "alone_equals_transformers": alone == theirs[i]["ids"],
                      "alone_vs_transformers_first_token_apart": first_difference(alone, theirs[i]["ids"])})
    return found


def parity(ours: list[dict], theirs: list[dict]) -> dict:
    differing = [i for i, (o, t) in enumerate(zip(ours, theirs)) if o["output"] != t["output"]]
    return {"identical_text": len(ours) - len(differing), "rows": len(ours), "differing_rows": differing,
            "prompt_tokens_differ": [i for i, (o, t) in enumerate(zip(ours, theirs))
                                     if o["prompt_tokens"] != t["prompt_tokens"]],
            "answer_tokens_differ": [i for i, (o, t) in enumerate(zip(ours, theirs))
                                     if o["completion_tokens"] != len(t["ids"])],
            "examples": [{"row": i, "llmtune": ours[i]["output"][:160], "transformers": theirs[i]["output"][:160]}
                         for i in differing[:3]]}


def main() -> None:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--analyze-max", type=int, default=8)
    a = p.parse_args()
    rows = prompts(a.prompts)
    ours_summary, ours = run_llmtune(rows, a.new_tokens, a.batch_size)
    theirs_summary, theirs = run_transformers(rows, a.new_tokens)
    same = parity(ours, theirs)
    if same["differing_rows"] and a.analyze_max:
        try:  # the figures above stand even if this extra look fails
            same["analysis"] = analyze(rows, same["differing_rows"][:a.analyze_max], theirs, a.new_tokens)
        except Exception as exc:  # noqa: BLE001
            same["analysis"] = f"failed: {type(exc).__name__}: {exc}"
    ratio = round(ours_summary["tokens_per_s"] / theirs_summary["tokens_per_s"], 2)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch "
                         f"{torch.__version__}, {torch.get_num_threads()} threads",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "prompts": len(rows), "new_tokens": a.new_tokens, "batch_size": a.batch_size,
              "llmtune_generate": {k: ours_summary[k] for k in ("tokens", "seconds", "tokens_per_s", "process_s")},
              "transformers_loop": theirs_summary, "ratio": ratio, "parity": same}
    print(json.dumps(result, indent=2))
    print(f"llmtune generate {ours_summary['tokens_per_s']} tokens/s, transformers loop "
          f"{theirs_summary['tokens_per_s']} tokens/s: {ratio}x; identical answers {same['identical_text']}/"
          f"{same['rows']}", file=sys.stderr)


if __name__ == "__main__":
    main()
