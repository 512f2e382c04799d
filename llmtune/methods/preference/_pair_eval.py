"""The held-out evaluation of a preference method (reward model, DPO, KTO, ORPO): every pair
scored on its own (_pair_scores.py), the figures per pair with their standard errors beside
the shortcut baselines (evaluate/pairwise.py), and for a policy, what it answers: greedy
replies to the held-out prompts, and the share closer to the chosen response than to the
rejected one.

Imported only inside fit/evaluate (torch)."""

from __future__ import annotations

import json
import math

from llmtune.evaluate.pairwise import mean_se, pairwise_report, proportion_se
from llmtune.methods.preference._pair_scores import (completion_text, pairs_of, prompt_ids, score_policy_pairs,
                                                     score_reward_pairs)

# per-pair report key -> the key a policy method reports it under (trl's names, kept)
_POLICY_KEYS = {"accuracy": "rewards/accuracies", "margin": "rewards/margins", "chosen": "rewards/chosen",
                "rejected": "rewards/rejected"}


def preference_eval(method, model, ref_model, tok, rows: list[dict], recipe) -> dict:
    """Per-pair figures of `model` (final/ or the base) on `rows` (normalised eval rows)."""
    pairs = pairs_of(rows)
    model.eval()
    if method.pair_score == "reward":
        from llmtune.methods.preference._rl_rewards import RewardModelScorer

        scorer = RewardModelScorer(model, tok, recipe.data.max_length, recipe.eval.batch_size)
        return _flatten(pairwise_report(score_reward_pairs(scorer, tok, pairs)), {})
    # a LoRA policy's reference is its base: the same model with the adapter switched off
    switch_off = model.disable_adapter if ref_model is None and hasattr(model, "disable_adapter") else None
    scored = score_policy_pairs(model, switch_off, ref_model, tok, pairs, kind=method.pair_score,
                                beta=method.config.beta, max_length=recipe.data.max_length,
                                keep_end=recipe.data.truncation_side == "left", batch_size=recipe.eval.batch_size)
    out = _flatten(pairwise_report(scored), _POLICY_KEYS)
    if recipe.eval.generate and pairs:
        out["generation"] = generation_preference(model, tok, pairs, recipe)
    return out


def _flatten(report: dict, rename: dict) -> dict:
    return {rename.get(k, k): v for k, v in report.items()}


def generation_preference(model, tok, pairs: list[dict], recipe) -> dict:
    """Greedy replies to each distinct held-out prompt (eval.generation): the share closer (token
    F1) to the chosen response than to the rejected one (ties half), and the shares that equal
    each (normalised exact match), with standard errors over prompts and three samples."""
    import torch

    from llmtune.evaluate.generation import generate_texts
    from llmtune.evaluate.metrics import exact_match, token_f1
    
    first: dict[str, dict] = {}
    for p in pairs:
        first.setdefault(json.dumps(p["prompt"], sort_keys=True), p)
    chosen = list(first.values())
    prompts = [prompt_ids(tok, p["prompt"]) for p in chosen]
    device = next(model.parameters()).device
    with torch.inference_mode():
        answers = generate_texts(model, tok, prompts, recipe.eval.generation, batch_size=recipe.eval.batch_size,
                                 device=device)
    closer, same_chosen, same_rejected = [], [], []
    for p, answer in zip(chosen, answers):
        good, bad = completion_text(p["chosen"]), completion_text(p["rejected"])
        f_good, f_bad = token_f1(answer, good), token_f1(answer, bad)
        closer.append(1.0 if f_good > f_bad else 0.5 if f_good == f_bad else 0.0)
        same_chosen.append(exact_match(answer, good))
        same_rejected.append(exact_match(answer, bad))
    n = len(closer)
    share = math.fsum(closer) / n
    return {"prompts": n, "closer_to_chosen": share, "closer_to_chosen_se": mean_se(closer)[1],
            "equals_chosen": math.fsum(same_chosen) / n,
            "equals_chosen_se": proportion_se(math.fsum(same_chosen) / n, n),
            "equals_rejected": math.fsum(same_rejected) / n,
            "samples": [{"prompt": p["prompt"], "answer": a, "chosen": completion_text(p["chosen"]),
                         "rejected": completion_text(p["rejected"])} for p, a in list(zip(chosen, answers))[:3]]}
