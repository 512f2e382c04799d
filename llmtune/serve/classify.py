"""Labels and probabilities for a classification run, scored the way `llmtune eval` scores
it: inputs tokenized as training tokenized them (data/encode.tokenize_classification: the
run's max_length and truncation side, text pairs through the tokenizer), the run's TaskModel
forward in eval mode (pooled hidden states through the trained head), the label its
argmax; the probabilities are the softmax of the same logits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Scored:
    label: str
    probabilities: dict[str, float]


class Classifier:
    def __init__(self, model, tokenizer, labels: list[str], *, max_length: int, truncation_side: str,
                 batch_size: int = 32):
        """`model`: the run's TaskModel (embed/loading.Loaded.model)."""
        import torch

        body_dtype = next(model.body.parameters()).dtype
        # The encoder may have moved the shared body (fp32 on CPU); the head follows it.
        model.head.to(device=next(model.body.parameters()).device, dtype=body_dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = next(model.parameters()).device
        self._torch = torch

    def tokenize(self, texts: list[str], pairs: list[str] | None) -> list[list[int]]:
        from llmtune.data.encode import tokenize_classification

        ids, _ = tokenize_classification(self.tokenizer, texts, pairs, self.max_length, self.truncation_side)
        return ids

    def score_ids(self, ids: list[list[int]]) -> list[Scored]:
        """One Scored per row, in input order; rows of similar length share a padded batch."""
        torch = self._torch
        from llmtune.data.batching import collate

        out: list[Scored | None] = [None] * len(ids)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                batch = collate([{"input_ids": ids[i]} for i in idx], self.pad_id)
                _, logits = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
                probs = torch.softmax(logits.float(), dim=-1).cpu()
                best = logits.argmax(-1).tolist()  # what eval's accuracy counts
                for row, i in enumerate(idx):
                    out[i] = Scored(self.labels[best[row]], dict(zip(self.labels, probs[row].tolist())))
        return out  # type: ignore[return-value]
