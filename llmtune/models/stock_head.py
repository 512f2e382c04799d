"""Which of llmtune's classification heads a stock transformers class reproduces exactly.

llmtune's head is dropout + linear on the pooled last hidden states. Transformers' decoder
classifiers (LlamaForSequenceClassification, GPT2ForSequenceClassification and the generic
class most decoders share) apply a bias-free linear `score` to the hidden state of each
sequence's last non-pad token: exactly llmtune's head with `pooling: last` when that head has
no bias. Encoder classifiers do not map: BertForSequenceClassification puts the pooler's
dense + tanh on the first token before its classifier, which no llmtune pooling does (`cls`
takes the first token's hidden state as it is), and none of them mean- or max-pools.

So a head on a decoder with `pooling: last` is built without a bias, and a merged export of
it is a `*ForSequenceClassification` folder; every other head keeps its bias and exports as
body + head.safetensors.
"""

from __future__ import annotations

import copy


def stock_classifier(config, pooling: str):
    """The `*ForSequenceClassification` class whose head equals llmtune's head (bias-free)
    under `pooling`, for a body with this config; None when no stock class does."""
    if pooling != "last":
        return None
    import torch
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    probe = copy.deepcopy(config)
    probe.num_labels = 2
    try:
        with torch.device("meta"):  # the class's layout only: nothing is allocated
            model = AutoModelForSequenceClassification.from_config(probe)
    except (ValueError, KeyError, ImportError):  # no classifier for this architecture (or remote code)
        return None
    score = getattr(model, "score", None)
    base = getattr(model, model.base_model_prefix, None)
    if isinstance(score, nn.Linear) and score.bias is None and base is not None:
        return type(model)
    return None


def why_not_stock(config, pooling: str) -> str:
    """Why no stock class reproduces the head, in words for the export message and docs."""
    arch = type(config).__name__.removesuffix("Config")
    if pooling != "last":
        return (f"pooling {pooling!r} has no stock transformers classifier: BERT-style classes put the pooler's "
                f"dense + tanh on the first token before the classifier, decoder classes read the last token, and "
                f"none mean- or max-pools")
    return f"{arch} has no stock classifier that reads the last token with a bias-free score"
