"""Load test of `llmtune serve`: N concurrent clients (the official openai client, streaming
chat requests) against a server on loopback, for a bounded time; prints p50/p95 latency, time
to first token, tokens/s and errors. Then checks that the same prompts give the same greedy
text through the server and through `llmtune generate`.

    python scripts/load_serve.py                       # smollm2-135m, 8 clients, 60 s
    python scripts/load_serve.py --clients 8 --max-batch 1   # the same without batching

The script starts the server itself (`python -m llmtune serve MODEL --port 0`, loopback only)
and stops it with SIGTERM at the end (which must exit 0). Run it alone on the machine (the
exclusive CPU lock) for figures worth recording."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
MAX_CLIENTS, MAX_SECONDS = 32, 600


def alpaca_prompts(n: int) -> list[str]:
    rows = json.loads((ROOT / "recipes/data/alpaca_tiny.json").read_text())
    texts = [r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else "") for r in rows]
    return (texts * (n // len(texts) + 1))[:n]


def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    first, tokens, text = None, 0, []
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": tokens, "text": "".join(text)}


def run_clients(base_url: str, model: str, clients: int, seconds: float, max_tokens: int, prompts: list[str]):
    from openai import OpenAI

    results, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    def client_loop():
        client = OpenAI(base_url=base_url, api_key=os.environ.get("LLMTUNE_API_KEY", "unused"), max_retries=0,
                        timeout=300)
        while time.perf_counter() < deadline:
            with lock:
                prompt = prompts[next(counter) % len(prompts)]
            try:
                r = {**one_request(client, model, prompt, max_tokens), "prompt": prompt}
                with lock:
                    results.append(r)
            except Exception as exc:  # an error is a result of the load test, not its end
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def summary(results: list[dict], errors: list[str], wall: float, clients: int) -> dict:
    lat, ttft = [r["latency"] for r in results], [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "errors": len(errors), "wall_s": round(wall, 1),
            "latency_p50_s": round(percentile(lat, 0.5), 3), "latency_p95_s": round(percentile(lat, 0.95), 3),
            "ttft_p50_s": round(percentile(ttft, 0.5), 3), "ttft_p95_s": round(percentile(ttft, 0.95), 3),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "mean_tokens_per_request": round(statistics.mean([r["tokens"] for r in results]), 1) if results else 0}


def generate_parity(model: str, base_url: str, model_id: str, prompts: list[str], max_tokens: int) -> dict:
    """The same prompts, greedy, through the server one at a time and through `llmtune generate`."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("LLMTUNE_API_KEY", "unused"), max_retries=0,
                    timeout=300)
    served = [one_request(client, model_id, p, max_tokens)["text"] for p in prompts]
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "prompts.jsonl", Path(tmp) / "answers.jsonl"
        src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in prompts))
        cmd = [sys.executable, "-m", "llmtune", "generate", model, "--input", str(src), "--out", str(out),
               "--max-new-tokens", str(max_tokens)]
        subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
        generated = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    texts = [row["output"] for row in sorted(generated, key=lambda row: row["line"])]
    same = sum(a == b for a, b in zip(served, texts))
    mismatches = [{"prompt": p, "server": a, "generate": b} for p, a, b in zip(prompts, served, texts) if a != b]
    return {"prompts": len(prompts), "identical": same, "mismatches": mismatches[:3], "alone": dict(zip(prompts, served))}


def batched_vs_alone(results: list[dict], alone: dict[str, str]) -> dict:
    """Answers the server gave under load (decoded in batches) against the same prompts alone."""
    pairs = [(r["text"], alone[r["prompt"]]) for r in results if r["prompt"] in alone]
    return {"compared": len(pairs), "identical": sum(a == b for a, b in pairs)}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=50.0)
    ap.add_argument("--parity-prompts", type=int, default=16, help="0 skips the check against llmtune generate")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--clients 1..{MAX_CLIENTS}, --seconds up to {MAX_SECONDS}")
    from serve_helpers import ServerProcess

    started = time.perf_counter()
    server = ServerProcess(args.model, "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms),
                           "--max-queue", str(4 * MAX_CLIENTS),
                           env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))},
                           timeout=600)
    import httpx
    from openai import OpenAI

    model_id = httpx.get(f"{server.base_url}/models").json()["data"][0]["id"]
    print(f"server up in {time.perf_counter() - started:.1f} s on {server.base_url}", file=sys.stderr)
    try:
        prompts = alpaca_prompts(64)
        one_request(OpenAI(base_url=server.base_url, api_key="unused"), model_id, prompts[0], 4)  # first-call costs
        results, errors, wall = run_clients(server.base_url, model_id, args.clients, args.seconds, args.max_tokens,
                                            prompts)
        report = {"model": args.model, "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
                  "max_tokens": args.max_tokens,
                  **summary(results, errors, wall, args.clients), "error_samples": errors[:3]}
        if args.parity_prompts:
            parity = generate_parity(args.model, server.base_url, model_id, prompts[:args.parity_prompts],
                                     args.max_tokens)
            report["parity"] = {**{k: v for k, v in parity.items() if k != "alone"},
                                "under_load_vs_alone": batched_vs_alone(results, parity["alone"])}
    finally:
        code = server.terminate(120) if server.proc.poll() is None else server.proc.returncode
        server.stop()
    report["server_exit"] = code
    print(json.dumps(report, indent=2))
    ok = report["errors"] == 0 and code == 0 and (not args.parity_prompts or not report["parity"]["mismatches"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
