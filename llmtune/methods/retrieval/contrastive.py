"""Contrastive finetuning of a sentence encoder for retrieval (data.task: retrieval).

Each batch holds B (query, positive[, negative]) pairs. Queries and texts are embedded by
the encoder (pooled as model.pooling says, L2-normalised), every query is scored against
every text of the batch (cosine x `scale`), and the loss is the cross-entropy of picking
its own positive: the other B-1 positives are its negatives for free ("in-batch
negatives", the multiple-negatives ranking loss of sentence-transformers). A row's
`negative` column, and negatives mined from `data.retrieval.documents` (`hard_negatives`),
join the batch's texts. A batch never holds one text twice (a query with several
positives would otherwise be pushed away from its own answers).

The whole body trains, or LoRA adapters (peft) when `lora` is set. The run is an encoder:
`llmtune embed RUN`, `llmtune index --encoder RUN`, `query`/`ask` on that store and
`eval.selection: nearest` (eval.encoder: RUN) all load it. Its final evaluation ranks
`data.retrieval.documents` for the `data.eval` queries (nDCG@10, MAP@10, recall@10/100,
MRR), exactly, in memory.

llmtune's own loop, not sentence-transformers' trainer: the two were run side by side on
the same Cranfield split (scripts/bench_contrastive.py; figures in docs/retrieval.md), and
the loop runs inside the run's lifecycle (manifest, signals, checkpoints, peft) like every
other method.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from llmtune.methods.base import Method, MethodConfig
from llmtune.methods.registry import register_method
from llmtune.strict_model import StrictModel

if TYPE_CHECKING:
    from llmtune.methods.job import Job, Outcome


class LoraOptions(StrictModel):
    r: int = Field(16, gt=0)
    """Rank of the low-rank update."""
    alpha: float = Field(32, gt=0)
    """Scaling numerator: the update is scaled by alpha/r."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Module names to adapt (e.g. [query, key, value, dense]); `all-linear`; or null for
    peft's per-architecture default (query and value for BERT)."""


class ContrastiveConfig(MethodConfig):
    name: Literal["contrastive"]
    lora: LoraOptions | None = None
    """Train LoRA adapters (peft) instead of every weight; null: full finetuning."""
    scale: float = Field(20.0, gt=0)
    """Cosine similarities are multiplied by this before the softmax (1/temperature; 20 is
    sentence-transformers' default)."""
    hard_negatives: int = Field(0, ge=0, le=16)
    """Negatives to mine per pair before training: the documents of
    `data.retrieval.documents` that the starting encoder ranks highest for the pair's query
    (exact search, as the evaluation ranks) and that are none of that query's positives
    in the training pairs (compared by text). 0: in-batch negatives only."""
    hard_negatives_skip: int = Field(0, ge=0)
    """Mined negatives start after this many top-ranked non-positive documents: the very top
    ones are often relevant but unjudged (false negatives)."""


@register_method
class Contrastive(Method):
    name = "contrastive"
    Config = ContrastiveConfig
    config: ContrastiveConfig
    summary = "a retrieval encoder from query/passage pairs: in-batch negatives (+ mined), full or LoRA"
    tasks = frozenset({"retrieval"})
    can_merge = True
    trains_itself = True

    def result_kind(self, task: str) -> str:
        return "encoder"

    def apply(self, body, *, causal: bool):
        lora = self.config.lora
        if lora is None:
            for p in body.parameters():
                p.requires_grad_(True)
            return body
        from peft import LoraConfig, get_peft_model

        from llmtune.errors import UserError

        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_modules)
        try:
            return get_peft_model(body, config)
        except ValueError as exc:  # peft's word on targets that do not exist or do not fit
            raise UserError(f"method contrastive: peft refused the LoRA settings ({exc}); check "
                            f"method.lora.target_modules against the model's module names") from None

    def body_source(self, base: str, final_dir: Path) -> str:
        return base if self.config.lora is not None else str(final_dir)

    def save(self, body, out_dir: Path) -> None:
        body.save_pretrained(out_dir)

    def load(self, body, from_dir: Path, *, causal: bool):
        if self.config.lora is None:
            return body  # the whole body was saved and loaded from final/
        from peft import PeftModel

        return PeftModel.from_pretrained(body, str(from_dir))

    def merge(self, body):
        return body.merge_and_unload() if self.config.lora is not None else body

    def fit(self, job: "Job") -> "Outcome":
        from llmtune.methods.retrieval._contrastive import train

        return train(job, self)

    def evaluate(self, recipe, final_dir: Path | None, limit: int | None, reporter) -> dict | None:
        from llmtune.methods.retrieval._retrieval_eval import evaluate_saved

        return evaluate_saved(recipe, self, final_dir, limit, reporter)
