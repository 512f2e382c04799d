"""The export's parity figures count positions exactly: the message names how many positions
agree on the top-1 token, not a percentage rounded twice."""

from types import SimpleNamespace

import torch

from llmtune.runs.gguf_parity import compare_logits


class _Shifted:
    """A stand-in model whose logits equal the reference's except at chosen positions."""

    def __init__(self, reference: list, flip: set[int]):
        self.reference, self.flip, self.calls = reference, flip, 0

    def __call__(self, input_ids):
        logits = self.reference[self.calls].clone()
        for pos in self.flip if self.calls == 0 else ():
            logits[pos] = logits[pos].flip(-1)  # a different argmax at this position
        self.calls += 1
        return SimpleNamespace(logits=logits[None])


def test_top1_agreement_is_an_exact_count_of_positions():
    torch.manual_seed(0)
    reference = [torch.randn(7, 11), torch.randn(5, 11)]
    prompts = [list(range(7)), list(range(5))]
    drift = compare_logits(reference, _Shifted(reference, flip={2, 4}), prompts)
    assert (drift.top1_agreed, drift.positions) == (10, 12)
    assert drift.figures()["top1_agreed"] == 10 and abs(drift.top1_agree - 10 / 12) < 1e-12
    assert drift.mean_kl > 0 and drift.max_abs > 0
