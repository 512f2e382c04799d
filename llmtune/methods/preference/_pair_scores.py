"""Per-pair scores of held-out preference rows, for `llmtune eval` and a run's final evaluation.

trl's trainers report their evaluation as a mean of per-batch means, which weighs an uneven
last batch's rows more than the others. Here every pair is scored on its own and the figures
come from evaluate/pairwise.py. Pairs are tokenised as trl's trainers tokenise them (the chat
template with a generation prompt, or prompt + completion + EOS; the completion starts where
prompt and prompt + completion part), so the scores are those training optimised:
- `implicit` (DPO, KTO): beta * (log pi(completion) - log pi_ref(completion)), summed over
  the completion's tokens;
- `odds` (ORPO): beta * the mean log-probability of the completion's tokens (no reference);
- `reward`: the reward model's score of prompt + completion.

Imported only inside evaluate (torch)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import TYPE_CHECKING, Callable

import torch

from llmtune.evaluate.pairwise import ScoredPair

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _full_ids(tok, prompt, completion) -> list[int]:
    if isinstance(prompt, list):
        return tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    eos = tok.eos_token or ""
    text = prompt + completion
    return tok(text if text.endswith(eos) else text + eos)["input_ids"]


def prompt_ids(tok, prompt) -> list[int]:
    if isinstance(prompt, list):
        return tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                       return_dict=True)["input_ids"]
    return tok(prompt)["input_ids"]


def encode_pair(tok, prompt, chosen, rejected, max_length: int, keep_end: bool) -> list[tuple[list[int], int]]:
    """[(ids, completion start)] for the chosen then the rejected sequence, cut to max_length
    (its end kept with `keep_end`, else its start)."""
    p = prompt_ids(tok, prompt)
    full = [_full_ids(tok, prompt, chosen), _full_ids(tok, prompt, rejected)]
    start = min(_common_prefix(p, f) for f in full)
    out = []
    for ids in full:
        if len(ids) > max_length:
            cut = len(ids) - max_length if keep_end else 0
            ids = ids[cut:cut + max_length]
            out.append((ids, max(start - cut, 0)))
        else:
            out.append((ids, start))
    return out


def _batches(seqs: list[tuple[list[int], int]], batch_size: int):
    """Indices of `seqs` in batches of similar length (less padding; order does not change a score)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]


@torch.inference_mode()
def completion_logps(model, seqs: list[tuple[list[int], int]], batch_size: int, pad_id: int,
                     context: Callable[[], "AbstractContextManager"] = nullcontext) -> list[tuple[float, int]]:
    """(sum of the completion tokens' log-probabilities, their count) for each sequence."""
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    for idx in _batches(seqs, batch_size):
        width = max(len(seqs[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i][0])] = torch.tensor(seqs[i][0])
            mask[r, :len(seqs[i][0])] = 1
        with context():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
        for r, i in enumerate(idx):
            seq, start = seqs[i]
            # token t is predicted at position t - 1; the completion's tokens are start .. len - 1
            values = logps[r, max(start, 1) - 1:len(seq) - 1]
            out[i] = (float(values.sum()), int(values.numel()))
    return out


def pairs_of(rows: list[dict]) -> list[dict]:
    """{prompt, chosen, rejected} rows: preference rows as they are; unpaired (KTO) rows paired
    by prompt, each desirable completion with an undesirable one of the same prompt."""
    if not rows or "chosen" in rows[0]:
        return rows
    groups: dict[str, dict[bool, list]] = {}
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True)
        groups.setdefault(key, {True: [], False: []})[bool(row["label"])].append(row)
    return [{"prompt": good["prompt"], "chosen": good["completion"], "rejected": bad["completion"]}
            for g in groups.values() for good, bad in zip(g[True], g[False])]


def completion_text(completion) -> str:
    return completion if isinstance(completion, str) else " ".join(m["content"] for m in completion)


def score_policy_pairs(policy, reference: Callable[[], "AbstractContextManager"] | None, ref_model, tok,
                       pairs: list[dict], *, kind: str, beta: float, max_length: int, keep_end: bool,
                       batch_size: int) -> list[ScoredPair]:
    """Each pair's implicit (`implicit`) or odds-ratio (`odds`) reward under `policy`. The
    reference is `ref_model`, or `policy` inside the `reference` context (an adapter switched off)."""
    seqs = [s for p in pairs for s in encode_pair(tok, p["prompt"], p["chosen"], p["rejected"], max_length,
                                                    keep_end)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    logps = completion_logps(policy, seqs, batch_size, pad)
    if kind == "odds":
        scores = [beta * total / max(count, 1) for total, count in logps]
    else:
        ref = completion_logps(ref_model or policy, seqs, batch_size, pad, reference or nullcontext)
        scores = [beta * (total - ref_total) for (total, _), (ref_total, _) in zip(logps, ref)]
    return [ScoredPair(scores[2 * i], scores[2 * i + 1], completion_text(p["chosen"]), completion_text(p["rejected"]),
                       logps[2 * i][1], logps[2 * i + 1][1]) for i, p in enumerate(pairs)]


def score_reward_pairs(scorer, tok, pairs: list[dict]) -> list[ScoredPair]:
    """Each pair's two reward-model scores (`scorer`: _rl_rewards.RewardModelScorer)."""
    prompts = [p["prompt"] for p in pairs for _ in (0, 1)]
    completions = [c for p in pairs for c in (p["chosen"], p["rejected"])]
    scores = scorer(prompts=prompts, completions=completions)
    lengths = [len(_full_ids(tok, pr, c)) - len(prompt_ids(tok, pr)) for pr, c in zip(prompts, completions)]
    return [ScoredPair(scores[2 * i], scores[2 * i + 1], completion_text(p["chosen"]), completion_text(p["rejected"]),
                       lengths[2 * i], lengths[2 * i + 1]) for i, p in enumerate(pairs)]
