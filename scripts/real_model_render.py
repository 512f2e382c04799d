"""The markdown of docs/real-model.md's tables, from scripts/real_model_table.py's results: every
figure with its standard error and the number of rows it was measured on."""

from __future__ import annotations

import json


def pm(value, se, digits: int = 3, pct: bool = False) -> str:
    """`value ± se` (a share as a percentage with `pct`)."""
    if not isinstance(value, (int, float)):
        return "-"
    if pct:
        return f"{100 * value:.1f}% ± {100 * se:.1f}" if isinstance(se, (int, float)) else f"{100 * value:.1f}%"
    return f"{value:.{digits}f} ± {se:.{digits}f}" if isinstance(se, (int, float)) else f"{value:.{digits}f}"


def _ev(results: dict, key: str) -> dict:
    return (results.get(key) or {}).get("eval") or {}


def _train(results: dict, key: str) -> dict:
    return (results.get(key) or {}).get("train") or {}


def _seconds(results: dict, key: str) -> str:
    t = _train(results, key).get("train_seconds")
    return f"{t:.0f}" if isinstance(t, (int, float)) else "-"


def _failed(results: dict, key: str) -> str | None:
    entry = results.get(key)
    if entry is None:
        return "not run"
    return "FAILED: " + entry["failed"].splitlines()[0][:160] if "failed" in entry else None


def one_line(text, width: int = 110) -> str:
    if isinstance(text, list):
        text = " / ".join(f"{m['role']}: {m['content']}" for m in text)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def sft_table(results: dict, methods: list[str]) -> list[str]:
    out = ["| AG News topic as one word (200 held-out rows) | trainable | exact match | token F1 | held-out loss | "
           "train s |", "| --- | --- | --- | --- | --- | --- |"]
    for key in ["sft/before"] + [f"sft/{m}" for m in methods]:
        failed = _failed(results, key)
        if failed:
            out.append(f"| {key} | {failed} | | | | |")
            continue
        e, t = _ev(results, key), _train(results, key)
        trainable = f"{t['trainable_parameters']:,}" if t.get("trainable_parameters") else "-"
        out.append(f"| {key.split('/')[1]} | {trainable} | {pm(e.get('exact_match'), e.get('exact_match_se'), pct=True)} "
                   f"| {pm(e.get('f1'), e.get('f1_se'))} | {pm(e.get('loss'), e.get('loss_se'))} | "
                   f"{_seconds(results, key)} |")
    return out


def user_turn(prompt: str) -> str:
    """The last user turn of a prompt rendered through a ChatML template (the system line and the
    markers would fill the table's width); other prompts unchanged."""
    marker = "<|im_start|>user\n"
    if marker not in prompt:
        return prompt
    return prompt.rsplit(marker, 1)[1].split("<|im_end|>", 1)[0]


def samples(results: dict, key: str, n: int = 3) -> list[str]:
    e = _ev(results, key)
    found = e.get("samples") or (e.get("generation") or {}).get("samples") or []
    out = []
    for s in found[:n]:
        prompt = s.get("prompt")
        if isinstance(prompt, list):
            prompt = prompt[-1]["content"]
        prompt = user_turn(str(prompt))
        answer = s.get("output", s.get("answer", s.get("completion")))
        extra = f" (reward {s['reward']:.2f})" if isinstance(s.get("reward"), (int, float)) else ""
        ref = s.get("reference", s.get("chosen"))
        out.append(f"  - {key}: \"{one_line(prompt, 90)}\" -> \"{one_line(answer, 80)}\"{extra}"
                   + (f" (reference: \"{one_line(ref, 40)}\")" if ref is not None else ""))
    return out


def pair_table(results: dict, keys: list[str], title: str) -> list[str]:
    out = [f"| {title} | pairs | accuracy | margin | chance / majority / shorter / longer | answers = chosen | "
           f"answers closer to chosen | train s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in keys:
        failed = _failed(results, key)
        if failed:
            out.append(f"| {key} | {failed} | | | | | | |")
            continue
        e = _ev(results, key)
        acc = e.get("rewards/accuracies", e.get("accuracy"))
        margin = e.get("rewards/margins", e.get("margin"))
        b = e.get("baselines") or {}
        base = " / ".join("n/a" if b.get(k) is None else f"{100 * b[k]:.1f}%" for k in
                          ("chance", "majority", "shorter", "longer"))
        g = e.get("generation") or {}
        out.append(f"| {key} | {e.get('pairs', '-')} | {pm(acc, e.get('accuracy_se'), pct=True)} | "
                   f"{pm(margin, e.get('margin_se'))} | {base} | "
                   f"{pm(g.get('equals_chosen'), g.get('equals_chosen_se'), pct=True)} | "
                   f"{pm(g.get('closer_to_chosen'), g.get('closer_to_chosen_se'), pct=True)} | {_seconds(results, key)} |")
    return out


def reward_table(results: dict, keys: list[str], title: str) -> list[str]:
    out = [f"| {title} | prompts x samples | mean reward | train s |", "| --- | --- | --- | --- |"]
    for key in keys:
        failed = _failed(results, key)
        if failed:
            out.append(f"| {key} | {failed} | | |")
            continue
        e = _ev(results, key)
        n = f"{e.get('prompts', '-')} x {e.get('completions', 0) // max(e.get('prompts', 1), 1)}"
        out.append(f"| {key} | {n} | {pm(e.get('mean_reward'), e.get('mean_reward_se'))} | "
                   f"{_seconds(results, key)} |")
    return out


def classify_table(results: dict) -> list[str]:
    out = ["| SST-2, 872 dev sentences | accuracy | training |", "| --- | --- | --- |"]
    for key, what in (("cls/label-words", "SmolLM2, label-word prompting, zero-shot"),
                      ("cls/llmtune", "SmolLM2 + LoRA + head, llmtune (recipes/smollm2-sst2-classify.yaml)"),
                      ("cls/reference", "SmolLM2 + LoRA + head, plain transformers + peft, same setting"),
                      ("cls/minilm", "MiniLM + LoRA, mean pooling, the same training rows")):
        failed = _failed(results, key)
        if failed:
            out.append(f"| {what} | {failed} | |")
            continue
        entry = results[key]
        e = entry.get("eval") or entry.get("reference") or {}
        t = _train(results, key)
        steps = f"{t.get('steps', '-')} steps, {_seconds(results, key)} s" if t else entry.get("note", "-")
        out.append(f"| {what} | {pm(e.get('accuracy'), e.get('accuracy_se'), pct=True)} (n={e.get('examples', e.get('eval_rows', '-'))}) | {steps} |")
    return out


def render(results: dict) -> str:
    import real_model_rows as R

    out = sft_table(results, list(R.SFT_METHODS) + ["lora-bf16"]) + [""]
    for key in ["sft/before"] + [f"sft/{m}" for m in R.SFT_METHODS]:
        out += samples(results, key)
    pref = ["pref/dpo-before", "pref/dpo", "pref/kto", "pref/orpo-before", "pref/orpo", "pref/reward-before",
            "pref/reward"]
    out += ["", *pair_table(results, pref, "SST-2 label words (200 held-out pairs)")]
    for key in pref:
        out += samples(results, key)
    out += ["", *pair_table(results, [k for k in R.ROWS if k.startswith("real/")], "real pairs")]
    out += ["", *reward_table(results, [k for k in R.ROWS if k.startswith("rl/")], "online RL (held-out prompts)")]
    for key in ("rl/rule-before", "rl/rule/grpo", "rl/rule/rloo", "rl/rm-before", "rl/rm/grpo", "rl/rm/rloo"):
        out += samples(results, key)
    out += ["", "chain:", *pair_table(results, ["chain/dpo-before", "chain/dpo"], "SFT -> DPO"),
            *reward_table(results, ["chain/grpo-before", "chain/grpo"], "SFT -> GRPO")]
    chain_sft = _ev(results, "chain/sft")
    if chain_sft:
        out.append(f"chain/sft: exact match {pm(chain_sft.get('exact_match'), chain_sft.get('exact_match_se'), pct=True)}, "
                   f"loss {pm(chain_sft.get('loss'), chain_sft.get('loss_se'))}")
    out += ["", *classify_table(results), ""]
    out.append("wall seconds per row: " + json.dumps({k: v.get("seconds") for k, v in results.items()}))
    return "\n".join(out)
