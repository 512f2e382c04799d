"""`llmtune chat` and `llmtune generate` on tiny trained runs of every causal method family:
each answers, through the prompt format it trained with, and differently from its base model
(the trained part is used: prefix and soft prompt included); chat over a pipe gives the answers
generate gives; history, /reset and a conversation longer than the context; generate resumes
after an interruption and stops at a malformed line with file:line, keeping what it wrote;
runs that hold no causal LM are refused naming the verb that fits. The terminal itself:
test_chat_terminal.py."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATA

pytestmark = pytest.mark.usefixtures("one_thread")

ALPACA, HH = DATA / "alpaca_tiny.json", DATA / "hh_rlhf_harmless_64.jsonl"
# name -> (model, method options, extra data keys). Few steps at a high learning rate: enough
# that each trained model answers differently from its base.
CAUSAL = {
    "full": ("tiny-gpt2", {"name": "full"}, {}),
    "frozen-head": ("tiny-llama", {"name": "frozen-head", "train_last_layers": 1}, {}),
    "lora-plain": ("tiny-llama", {"name": "lora", "r": 4, "target_modules": "all-linear"}, {"prompt_style": "plain"}),
    "ia3": ("tiny-gpt2", {"name": "ia3"}, {}),
    "prefix": ("tiny-llama", {"name": "prefix", "num_virtual_tokens": 4}, {}),
    "soft-prompt": ("tiny-llama", {"name": "soft-prompt", "num_virtual_tokens": 4}, {}),
    "adapter": ("tiny-llama", {"name": "adapter", "bottleneck_size": 8}, {}),
    "dpo": ("tiny-llama", {"name": "dpo", "beta": 0.1}, {"task": "preference"}),
}
PROMPTS = ["Describe a process of making crepes.", "Name three colours.", "What is the capital of France?"]


def _raw(model: str, method: dict, extra: dict) -> dict:
    task = extra.get("task", "sft")
    data = {"task": task, "train": {"path": str(HH if task == "preference" else ALPACA), "limit": 16},
            "max_length": 64, "eval_fraction": 0.0, **{k: v for k, v in extra.items() if k != "task"}}
    lr = 2e-3 if method["name"] in ("full", "dpo") else 5e-2
    return {"model": {"name": model}, "data": data, "method": method,
            "train": {"max_steps": 4, "batch_size": 8, "lr": lr, "log_every": 2}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run trained once for the module (and a classification and a reward run)."""
    from llmtune.console import Reporter
    from llmtune.recipe.load import recipe_from_dict
    from llmtune.train.session import run_recipe

    root = tmp_path_factory.mktemp("infer-runs")
    wanted = dict(CAUSAL)
    wanted["cls"] = ("tiny-bert", {"name": "lora", "r": 4}, {"task": "classification"})
    wanted["reward"] = ("tiny-llama", {"name": "reward"}, {"task": "preference"})
    done = {}
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setenv("LLMTUNE_CACHE", str(root / "cache"))
        for name, (model, method, extra) in wanted.items():
            raw = _raw(model, method, extra)
            if extra.get("task") == "classification":
                raw["data"] = {"task": "classification", "train": {"path": str(DATA / "sst2_train.tsv"), "limit": 16},
                               "columns": {"text": "sentence", "label": "label"}, "max_length": 32,
                               "eval_fraction": 0.0}
            run_recipe(recipe_from_dict(raw), Reporter(quiet=True), output=root / name)
            done[name] = root / name
    return done


def _prompts_file(tmp_path: Path, rows=PROMPTS) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("".join(r + "\n" for r in rows))
    return path


def _answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _next_token_gap(run: Path, base_model: str) -> float:
    """Largest difference of next-token log-probabilities, run vs base, as the engine computes
    them (a tiny model's greedy answers can coincide though its distribution moved)."""
    from llmtune.runs.inference import open_causal_lm

    logprobs = []
    for target in (run, base_model):
        lm = open_causal_lm(target, verb="generate")
        ids = torch.tensor([lm.prompt_ids([{"role": "user", "content": PROMPTS[0]}])])
        logits, _ = lm.engine.forward(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None], None)
        logprobs.append(torch.log_softmax(logits.float(), -1))
    return (logprobs[0] - logprobs[1]).abs().max().item()


def _chat_over_a_pipe(cli, monkeypatch, target, lines: list[str], *flags: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    return cli("chat", target, *flags)


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_every_causal_method_chats_and_generates_as_trained(name, runs, cli, monkeypatch, tmp_path):
    run, base_model = runs[name], CAUSAL[name][0]
    res = cli("generate", run, "--input", _prompts_file(tmp_path), "--out", tmp_path / "a.jsonl",
              "--max-new-tokens", "12", "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["rows"] == summary["generated"] == 3 and summary["tokens"] > 0 and summary["tokens_per_s"] > 0
    rows = _answers(tmp_path / "a.jsonl")
    assert [r["line"] for r in rows] == [1, 2, 3] and [r["prompt"] for r in rows] == PROMPTS
    base = cli("generate", base_model, "--input", _prompts_file(tmp_path), "--out", tmp_path / "base.jsonl",
               "--max-new-tokens", "12")
    assert base.code == 0, base.err
    if name in ("prefix", "soft-prompt"):  # learned inputs: the answers themselves change
        assert [r["output"] for r in rows] != [r["output"] for r in _answers(tmp_path / "base.jsonl")], \
            "the trained run answers like its base model: what the method trained is not used"
    assert _next_token_gap(run, base_model) > 1e-3, "generation does not see what the method trained"
    chat = _chat_over_a_pipe(cli, monkeypatch, run, [PROMPTS[1]], "--max-new-tokens", "12")
    assert chat.code == 0, chat.err
    escaped = rows[1]["output"].replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    assert chat.out == escaped + "\n"


def test_a_plain_prompt_style_run_is_prompted_with_its_template(runs):
    from llmtune.runs.inference import open_causal_lm

    lm = open_causal_lm(runs["lora-plain"], verb="chat")
    assert lm.prompt_format.style == "plain"
    ids = lm.prompt_ids([{"role": "user", "content": "Name three colours."}])
    assert lm.tokenizer.decode(ids) == "### Instruction:\nName three colours.\n\n### Response:\n"
    assert open_causal_lm(runs["prefix"], verb="chat").prompt_format.style == "chat"


@pytest.mark.parametrize("name,holds,fits", [("cls", "a classification model", "llmtune eval"),
                                             ("reward", "a reward model", "llmtune eval")])
@pytest.mark.parametrize("verb", ["chat", "generate"])
def test_a_run_without_a_causal_lm_is_refused_with_the_verb_that_fits(name, holds, fits, verb, runs, cli, tmp_path):
    extra = ("--input", _prompts_file(tmp_path), "--out", tmp_path / "a.jsonl") if verb == "generate" else ()
    res = cli(verb, runs[name], *extra)
    assert res.code == 2
    assert f"holds {holds}, not a causal LM" in res.err and fits in res.err and "Traceback" not in res.err
    assert not (tmp_path / "a.jsonl").exists()


def test_chat_keeps_history_until_reset(runs, cli, monkeypatch):
    q = PROMPTS[1]
    res = _chat_over_a_pipe(cli, monkeypatch, runs["prefix"], [q, q, "/reset", q, "", "/exit", q],
                            "--max-new-tokens", "10", "--system", "Be brief.")
    assert res.code == 0, res.err
    first, again, after_reset, blank = res.out.split("\n")[:4]
    assert after_reset == first and blank == ""
    assert res.out.count("\n") == 4  # nothing after /exit
    assert again != first, "the second answer should see the first exchange"


def test_a_conversation_longer_than_the_context_drops_the_oldest_turns(runs, cli, monkeypatch):
    long = " ".join(["word"] * 150)  # ~150 tokens: three turns do not fit 512 positions with 100 to answer
    res = _chat_over_a_pipe(cli, monkeypatch, runs["lora-plain"], [long, long, long, "word " * 600, "hi"],
                            "--max-new-tokens", "100")
    assert res.code == 0, res.err
    assert "dropped the 1 oldest turn" in res.err
    assert "this message is" in res.err and "shorten it" in res.err  # the 600-word one, alone too long
    assert len(res.out.split("\n")) == 6 and res.out.split("\n")[3] == ""
    assert "Traceback" not in res.err


def test_generate_resumes_after_an_interruption(runs, cli, tmp_path):
    prompts = [f"Question {i}: name a colour." for i in range(7)]
    inp = _prompts_file(tmp_path, prompts)
    flags = ("--max-new-tokens", "8", "--temperature", "0.8", "--seed", "3", "--batch-size", "2")
    fresh = cli("generate", runs["lora-plain"], "--input", inp, "--out", tmp_path / "fresh.jsonl", *flags)
    assert fresh.code == 0, fresh.err
    lines = (tmp_path / "fresh.jsonl").read_text().splitlines(keepends=True)
    # killed after three rows, in the middle of writing the fourth
    (tmp_path / "out.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    res = cli("generate", runs["lora-plain"], "--input", inp, "--out", tmp_path / "out.jsonl", *flags, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["kept"] == 3 and json.loads(res.out)["generated"] == 4
    assert "cut off" in res.err
    assert (tmp_path / "out.jsonl").read_text() == "".join(lines)  # sampled, seeded per line: the same rows
    again = cli("generate", runs["lora-plain"], "--input", inp, "--out", tmp_path / "out.jsonl", *flags, "--json")
    assert json.loads(again.out)["generated"] == 0
    inp.write_text("A different first prompt\n" + "".join(p + "\n" for p in prompts[1:]))
    changed = cli("generate", runs["lora-plain"], "--input", inp, "--out", tmp_path / "out.jsonl")
    assert changed.code == 2 and "input line 1 answers another prompt" in changed.err


def test_a_malformed_line_exits_2_naming_it_and_keeps_the_answers_before_it(runs, cli, tmp_path):
    inp = tmp_path / "p.jsonl"
    inp.write_text('{"prompt": "one"}\n{"messages": [{"role": "user", "content": "two"}], "id": "b"}\n\n'
                   '{"instruction": "three", "input": "x"}\n{"prompt": "four"\n{"prompt": "five"}\n')
    out = tmp_path / "a.jsonl"
    res = cli("generate", runs["prefix"], "--input", inp, "--out", out, "--max-new-tokens", "4", "--batch-size", "1")
    assert res.code == 2 and f"{inp}:5: not valid JSON" in res.err
    rows = _answers(out)
    assert [r["line"] for r in rows] == [1, 2, 4] and rows[1]["id"] == "b"
    assert rows[2]["prompt"] == {"instruction": "three", "input": "x"}
    inp.write_text('{"text": "no prompt key"}\n')
    res = cli("generate", runs["prefix"], "--input", inp, "--out", tmp_path / "b.jsonl")
    assert res.code == 2 and f"{inp}:1: no prompt in this row (keys: text)" in res.err
    res = cli("generate", runs["prefix"], "--input", tmp_path / "p.csv", "--out", tmp_path / "b.jsonl")
    assert res.code == 2 and ".jsonl file" in res.err
