"""Check an exported GGUF file with llama.cpp itself (through llama-cpp-python), against the
run it came from. Outside CI: llama-cpp-python is not a dependency of llmtune (docs/using.md
says how it was built here). Two halves, each in its own environment:

    # 1. llmtune's side (the project venv): token ids, logits and greedy continuations of the run
    python scripts/gguf_llamacpp_check.py reference RUN_DIR --out ref.npz
    # 2. llama.cpp's side (a venv with llama-cpp-python): the same prompts through the GGUF file
    /work/llamacpp-venv/bin/python scripts/gguf_llamacpp_check.py compare EXPORT/FILE.gguf ref.npz

The prompts are conversations rendered by the run's chat template (the same text the Modelfile's
TEMPLATE produces) and plain text. `compare` tokenizes each prompt with llama.cpp and compares
the ids, evaluates llmtune's ids and compares the logits at every position (max |difference|
relative to the spread of llmtune's logits, as the export's parity check reports it, and top-1
agreement), and continues each prompt greedily, token by token, comparing the tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    [{"role": "user", "content": "Give three tips for staying healthy."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Name a primary colour."}],
    [{"role": "user", "content": "Translate 'good morning' into Spanish."}],
]
PLAIN = ["The three largest planets in the solar system are"]
NEW_TOKENS = 32


def reference(run_dir: Path, out: Path) -> None:
    """llmtune's side: ids, all-position logits and a greedy continuation per prompt."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from llmtune.runs.export_gguf import merged_model
    from llmtune.runs.gguf_tokenizer import render
    from llmtune.runs.open import open_run

    run = merged_model(open_run(run_dir))
    texts = [render(run.tok, c) for c in CONVERSATIONS] + PLAIN
    arrays, meta = {}, []
    for i, text in enumerate(texts):
        ids = run.tok(text, add_special_tokens=i >= len(CONVERSATIONS))["input_ids"]
        with torch.no_grad():
            logits = run.body(input_ids=torch.tensor([ids])).logits[0].float().numpy()
            out_ids = run.body.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                                        max_new_tokens=NEW_TOKENS, do_sample=False,
                                        pad_token_id=run.tok.pad_token_id)[0, len(ids):].tolist()
        arrays[f"logits{i}"] = logits
        meta.append({"text": text, "ids": ids, "greedy": out_ids, "greedy_text": run.tok.decode(out_ids)})
    np.savez_compressed(out, meta=json.dumps(meta), **arrays)
    print(f"reference for {len(texts)} prompts written to {out}")


def compare(gguf_path: Path, ref: Path) -> None:
    """llama.cpp's side, against the reference."""
    import numpy as np
    from llama_cpp import Llama

    data = np.load(ref)
    meta = json.loads(str(data["meta"]))
    started = time.perf_counter()
    llm = Llama(model_path=str(gguf_path), n_ctx=512, logits_all=True, n_threads=2, verbose=False, seed=0)
    print(f"llama.cpp loaded {gguf_path.name} in {time.perf_counter() - started:.1f} s")
    rows = []
    for i, item in enumerate(meta):
        plain = i >= len(CONVERSATIONS)
        ids = llm.tokenize(item["text"].encode(), add_bos=plain and llm.metadata.get(
            "tokenizer.ggml.add_bos_token") == "true", special=True)
        reference_logits = data[f"logits{i}"]
        llm.reset()
        llm.eval(item["ids"])
        scores = np.array(llm.scores[: len(item["ids"])], dtype=np.float32)
        diff = np.abs(scores - reference_logits).max(axis=1)
        relative = float((diff / reference_logits.std(axis=1)).max())
        top1 = float((scores.argmax(1) == reference_logits.argmax(1)).mean())
        greedy = []
        for _ in range(NEW_TOKENS):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(token)
            if token == llm.token_eos():
                break
            llm.eval([token])
        same = _common_prefix(greedy, item["greedy"])
        rows.append({"prompt": i, "ids_equal": ids == item["ids"], "tokens": len(ids),
                     "max_abs": float(diff.max()), "relative": round(relative, 4), "top1": round(top1, 4),
                     "greedy_same_tokens": f"{same}/{len(item['greedy'])}",
                     "llamacpp": llm.detokenize(greedy).decode(errors="replace"), "llmtune": item["greedy_text"]})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="side", required=True)
    r = sub.add_parser("reference")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("gguf", type=Path)
    c.add_argument("ref", type=Path)
    args = parser.parse_args()
    if args.side == "reference":
        reference(args.run_dir, args.out)
    else:
        compare(args.gguf, args.ref)


if __name__ == "__main__":
    main()
