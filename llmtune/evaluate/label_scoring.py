"""Classification by a causal LM: each label is scored by the log-likelihood of its
verbaliser after the prompt, and the most likely label is the prediction.

All continuations are scored in batched forward passes. When every label's word is a
single token after the same context (the usual case), one row per prompt suffices: the
last position's distribution scores every label at once. Otherwise each label gets its
own row. Rows are left-padded so that every continuation ends at the last position, and
only the last few positions' logits are computed (`logits_to_keep`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Row:
    ids: list[int]
    targets: list[tuple[int, int, int]] = field(default_factory=list)
    """(distance from the end of the row of the logit position, token id, output slot)."""


def continuations(tok, prompts, words: list[str], answer_separator: str, prefix: list[int]):
    """Per prompt, per label: (context ids, continuation ids).

    Prompt and answer are tokenized together and split where the prompt's own tokens end,
    so a tokenizer that merges across the boundary still scores what the model would see."""
    texts = [p.text + answer_separator + w for p in prompts for w in words]
    whole = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    alone = tok([answer_separator + w for w in words], add_special_tokens=False)["input_ids"]
    out = []
    for i, p in enumerate(prompts):
        pairs = []
        for li in range(len(words)):
            if p.cut:  # the prompt is a cut version of its text: append the answer's own tokens
                pairs.append((p.ids, alone[li]))
                continue
            ids = prefix + whole[i * len(words) + li]
            n = _common_prefix(ids, p.ids)
            if n == len(ids):  # the answer vanished into the prompt's last token: score it alone
                pairs.append((p.ids, alone[li]))
            else:
                pairs.append((ids[:n], ids[n:]))
        out.append(pairs)
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _rows(pairs_per_prompt) -> tuple[list[_Row], int]:
    rows = []
    n_labels = len(pairs_per_prompt[0]) if pairs_per_prompt else 0
    for i, pairs in enumerate(pairs_per_prompt):
        ctx0 = pairs[0][0]
        if all(len(c) == 1 and ctx == ctx0 for ctx, c in pairs):
            rows.append(_Row(list(ctx0), [(0, c[0], i * n_labels + li) for li, (_, c) in enumerate(pairs)]))
            continue
        for li, (ctx, c) in enumerate(pairs):
            ids = list(ctx) + list(c)
            # Token c[t] sits at position len(ctx)+t and is predicted by the logits one before it.
            rows.append(_Row(ids, [(len(c) - t, tokid, i * n_labels + li) for t, tokid in enumerate(c)]))
    return rows, n_labels


def score_labels(body, pairs_per_prompt, *, pad_id: int, batch_size: int, reduce: str, device,
                 share_prefix: bool = False, stats: dict | None = None):
    """(n_prompts, n_labels) float tensor of label scores (summed or mean token log-probs).

    `share_prefix`: rows with a long common prefix (few-shot prompts with the same
    demonstrations) encode it once (prefix_sharing.py); `stats` receives what was shared."""
    import torch

    rows, n_labels = _rows(pairs_per_prompt)
    slots = len(pairs_per_prompt) * n_labels
    total = torch.zeros(slots, dtype=torch.float64)
    count = torch.zeros(slots, dtype=torch.float64)

    def add(lp, slot):
        total.index_add_(0, slot, lp.double().cpu())
        count.index_add_(0, slot, torch.ones_like(slot, dtype=torch.float64))

    plain = list(range(len(rows)))
    with torch.inference_mode():
        if share_prefix and rows:
            from llmtune.evaluate import prefix_sharing

            if prefix_sharing.supports_prefix_cache(body):
                plain, shared = prefix_sharing.score_shared(body, rows, pad_id=pad_id, batch_size=batch_size,
                                                            device=device, add=add, plain_logprobs=_batch_logprobs)
                if stats is not None:
                    stats.update(shared)
        order = sorted(plain, key=lambda r: len(rows[r].ids))
        for s in range(0, len(order), batch_size):
            add(*_batch_logprobs(body, [rows[r] for r in order[s:s + batch_size]], pad_id, device))
    scores = total / count.clamp(min=1) if reduce == "mean" else total
    return scores.view(len(pairs_per_prompt), n_labels)


def _batch_logprobs(body, batch: list[_Row], pad_id: int, device):
    import torch

    width = max(len(r.ids) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        ids[i, width - len(r.ids):] = torch.tensor(r.ids)
        mask[i, width - len(r.ids):] = 1
    # Left padding: positions count real tokens only, as if each row were alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(d for r in batch for d, _, _ in r.targets) + 1
    logits = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                  use_cache=False, logits_to_keep=keep).logits[:, -keep:]
    return _pick(logits, batch, keep, device)


def _pick(logits, batch: list[_Row], keep: int, device):
    """(log-prob of each target token, its output slot) from the rows' last `keep` logits."""
    import torch

    row_i = torch.tensor([i for i, r in enumerate(batch) for _ in r.targets], device=device)
    at = torch.tensor([keep - 1 - d for r in batch for d, _, _ in r.targets], device=device)
    tok = torch.tensor([t for r in batch for _, t, _ in r.targets], device=device)
    slot = torch.tensor([o for r in batch for _, _, o in r.targets])
    # log_softmax only over the positions that score a token, never the whole sequence.
    picked = torch.log_softmax(logits[row_i, at].float(), dim=-1)
    return picked.gather(1, tok.unsqueeze(1)).squeeze(1), slot
