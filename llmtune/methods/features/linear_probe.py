"""Linear probe: the feature-based approach. The encoder stays frozen; its pooled features
of the training texts are computed once (and cached on disk), and a multinomial logistic
regression is fitted on them.

The result is an ordinary llmtune classifier: a TaskModel whose body is the untouched base
model and whose head is the fitted linear layer. So final/ holds only head.safetensors, the
tokenizer and llmtune.json (naming the encoder by `base_model`), never a copy of the
encoder, and `llmtune eval RUN_DIR` scores it through the same path as every other
classification run.

The regression is a full-batch L-BFGS on standardised features in torch (no new
dependency: scikit-learn is not one of llmtune's). The problem is small and convex (a few
thousand rows x a few hundred features), so L-BFGS reaches the optimum in well under a
second; standardising makes it well conditioned, and the scaling is folded back into the
saved weights, so the head reads the raw pooled features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from llmtune.methods.base import Method, MethodConfig, freeze
from llmtune.methods.registry import register_method

if TYPE_CHECKING:
    from llmtune.methods.job import Job, Outcome


class LinearProbeConfig(MethodConfig):
    name: Literal["linear-probe"]
    l2: float = Field(0.1, ge=0)
    """L2 penalty on the weights (not the bias), added to the mean cross-entropy and
    measured on standardised features. Larger values give a smoother classifier; raise it
    when there are few training rows."""
    max_iter: int = Field(500, gt=0)
    """Most L-BFGS iterations; the fit stops earlier once the loss stops changing."""


@register_method
class LinearProbe(Method):
    name = "linear-probe"
    Config = LinearProbeConfig
    config: LinearProbeConfig
    summary = "frozen encoder, logistic regression on its pooled features (embedded once, cached)"
    tasks = frozenset({"classification"})
    can_merge = True  # nothing to fold in: the body is the untouched base encoder
    trains_itself = True

    def merge(self, body):
        return body

    def apply(self, body, *, causal: bool):
        freeze(body)
        return body

    # save/load: nothing of the body trained; the run saves and loads the head.

    def fit(self, job: Job) -> Outcome:
        from llmtune.methods.features._probe import fit_probe

        return fit_probe(job, self, self.config)
