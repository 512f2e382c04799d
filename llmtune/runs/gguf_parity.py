"""Does the written GGUF file compute what the run computes? Read it back with transformers'
GGUF reader and compare, before the export is allowed to look finished.

On sample prompts (plain text, and conversations through the chat template when the tokenizer
has one), at every position:

- conversion: the file against the merged model with each weight rounded exactly as the file
  stores it. Only a conversion error (a tensor under the wrong name, in the wrong layout, a
  wrong key) moves this, whatever the type: the largest |logit difference| may be at most
  CONVERSION_TOLERANCE of the spread (standard deviation) of the model's logits.
- drift: the file against the run as the run computes it (LoRA unmerged, so the merge is
  checked too), as the mean KL divergence of the next-token distributions, within the
  tolerance of the type (TOLERANCES). This bounds what the rounding itself costs; a KL rather
  than the largest logit difference, which lands on tokens nobody would sample.

And the tokenizer read back from the file must give the run tokenizer's ids on sample strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtune.runs.gguf_tokenizer import SAMPLE_CONVERSATIONS, render

CONVERSION_TOLERANCE = 1e-3
"""Largest |logit difference| between the file and the identically rounded merged model, as a
fraction of the logits' standard deviation: room for float32 summation order only (every
export measured gave exactly 0: transformers dequantizes to the same floats and runs the same
model class)."""

TOLERANCES: dict[str, float] = {
    "f32": 1e-05,
    "f16": 3e-05,
    "bf16": 0.002,
    "q8_0": 0.02,
    "q5_1": 2,
    "q5_0": 0.9,
    "q4_1": 0.5,
    "q4_0": 4,
}
"""Mean KL divergence (nats) of the file's next-token distributions from the run's, allowed per
type: 10 times the largest measured on a trained SmolLM2 LoRA run and on tiny models, at least
1e-5 (docs/using.md, "How close is the GGUF file")."""

PLAIN_PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n    return a + b\n\nprint(add(2,",
    "In 2024, 3 cats and 12 dogs lived on Main Street; the cats",
]

TOKENIZER_SAMPLES = [
    "Hello, world!", "  leading spaces and trailing ones  ", "tabs\tand\nnew\n\nlines\r\n",
    "digits 1234567890, 3.14159 and 1,000,000", "café, naïve, Straße, 日本語, 🙂",
    "it's don't we'll I'M", "x<y && y>=z || a!=b; // done",
]


class ParityFailed(Exception):
    """The written file does not compute what the run computes (exit 1); the file is removed."""

    exit_code = 1

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class Comparison:
    max_abs: float = 0.0
    """The largest |logit difference| over every prompt, position and vocabulary entry."""
    relative: float = 0.0
    """The largest, over prompts, of that prompt's max |difference| / std of its reference logits."""
    mean_kl: float = 0.0
    """KL(run || file) of the next-token distributions, in nats, averaged over positions."""
    max_kl: float = 0.0
    top1_agree: float = 1.0
    top1_agreed: int = 0
    """How many positions have the same most likely next token (the exact count behind top1_agree)."""
    positions: int = 0

    def figures(self) -> dict[str, Any]:
        return {"max_abs_logit_diff": round(self.max_abs, 6), "relative": round(self.relative, 6),
                "mean_kl": round(self.mean_kl, 8), "max_kl": round(self.max_kl, 6),
                "top1_agreement": round(self.top1_agree, 4), "top1_agreed": self.top1_agreed,
                "positions": self.positions}


def sample_ids(tok, context: int) -> list[list[int]]:
    """Token ids of the sample prompts, with the run's tokenizer."""
    ids = [tok(p)["input_ids"] for p in PLAIN_PROMPTS]
    if getattr(tok, "chat_template", None):
        for conversation in SAMPLE_CONVERSATIONS:
            try:
                text = render(tok, conversation)
            except Exception:  # noqa: BLE001 - a template may refuse a conversation (no system role)
                continue
            ids.append(tok(text, add_special_tokens=False)["input_ids"])
    return [i[:context] for i in ids if i]


def read_back(path: Path):
    """(model, tokenizer) as transformers' GGUF reader builds them from the file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tok


def rounded_copy(body, rounded: dict[str, Any]):
    """`body` with each weight replaced by what the file stores for it (None: no rounding)."""
    import copy

    import torch

    if not rounded:
        return None
    twin = copy.deepcopy(body)
    state = {name: torch.from_numpy(array) for name, array in rounded.items()}
    twin.load_state_dict(state, strict=False)
    return twin.eval()


def logits_of(model, prompts: list[list[int]]) -> list:
    """The model's float32 logits for each prompt, one at a time (no padding to get wrong)."""
    import torch

    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids])).logits.float()[0] for ids in prompts]


def compare_logits(reference: list, candidate, prompts: list[list[int]]) -> Comparison:
    result, agree, kl_sum = Comparison(), 0, 0.0
    for a, b in zip(reference, logits_of(candidate, prompts)):
        diff = (a - b).abs().max().item()
        result.max_abs = max(result.max_abs, diff)
        result.relative = max(result.relative, diff / max(a.std().item(), 1e-12))
        p, q = a.log_softmax(-1), b.log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1).clamp_min(0)
        kl_sum += kl.sum().item()
        result.max_kl = max(result.max_kl, kl.max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        result.positions += a.shape[0]
    result.mean_kl = kl_sum / max(result.positions, 1)
    result.top1_agreed, result.top1_agree = agree, agree / max(result.positions, 1)
    return result


def compare_tokenizers(run_tok, file_tok, extra: list[str]) -> list[str]:
    """Sample strings whose ids differ between the two tokenizers (empty: they agree)."""
    special = [t for t in (run_tok.bos_token, run_tok.eos_token) if t]
    samples = TOKENIZER_SAMPLES + extra + [f"before {' and '.join(special)} after"]
    return [s for s in samples if run_tok(s)["input_ids"] != file_tok(s)["input_ids"]]


@dataclass
class RunSide:
    """What the file is compared with: the run's model as the run computes it (unmerged),
    and the merged body whose weights were written."""

    prompts: list[list[int]]
    logits: list
    """The run's own logits on `prompts` (before merging)."""
    body: Any
    """The merged body that was written (its rounded twin is the conversion reference)."""
    tok: Any


def read_back_or_fail(path: Path):
    try:
        return read_back(path)
    except Exception as exc:  # noqa: BLE001 - whatever the reader makes of a file it cannot take
        raise ParityFailed(f"GGUF parity check failed, so no file was kept: transformers' GGUF reader could not "
                           f"read the written file back ({type(exc).__name__}: {str(exc)[:300]})",
                           {"read_back": f"{type(exc).__name__}: {exc}"}) from None


def check(path: Path, run: RunSide, rounded: dict[str, Any], quant: str) -> dict:
    """Compare the file with the run; raise ParityFailed with the figures when it differs."""
    file_model, file_tok = read_back_or_fail(path)
    drift = compare_logits(run.logits, file_model, run.prompts)
    twin = rounded_copy(run.body, rounded)
    conversion = compare_logits(logits_of(twin or run.body, run.prompts), file_model, run.prompts)
    has_template = bool(getattr(run.tok, "chat_template", None))
    chats = [render(run.tok, c) for c in SAMPLE_CONVERSATIONS[:1]] if has_template else []
    token_mismatches = compare_tokenizers(run.tok, file_tok, chats)
    report = {"prompts": len(run.prompts), "conversion": conversion.figures(), "drift": drift.figures(),
              "tolerance": {"conversion": CONVERSION_TOLERANCE, "drift": TOLERANCES[quant]},
              "tokenizer_mismatches": token_mismatches}
    problems = _problems(conversion, drift, token_mismatches, quant)
    if problems:
        raise ParityFailed("GGUF parity check failed, so no file was kept: " + "; ".join(problems), report)
    return report


def _problems(conversion: Comparison, drift: Comparison, token_mismatches: list[str], quant: str) -> list[str]:
    problems = []
    if conversion.relative > CONVERSION_TOLERANCE:
        problems.append(f"the file's logits differ from the merged model's with the same rounding by "
                        f"{conversion.max_abs:.4g} ({conversion.relative:.3g} of the logits' spread; allowed "
                        f"{CONVERSION_TOLERANCE:g}): a tensor or key was written wrongly")
    if drift.mean_kl > TOLERANCES[quant]:
        problems.append(f"the file's next-token distributions differ from the run's by a mean KL divergence of "
                        f"{drift.mean_kl:.3g} nats (allowed {TOLERANCES[quant]:g} for {quant}; max |logit difference| "
                        f"{drift.max_abs:.4g}); top-1 tokens agree at {drift.top1_agreed} of {drift.positions} "
                        f"positions")
    if token_mismatches:
        problems.append(f"the tokenizer read back from the file splits {len(token_mismatches)} sample string(s) "
                        f"differently from the run's, e.g. {token_mismatches[0]!r}")
    return problems
