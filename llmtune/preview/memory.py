"""Parameter counts and a training-memory estimate, from a weightless copy of the model.

The model is built from its config on torch's meta device (shapes, no weights, no time) with
the method applied, so trainable and total parameters are the ones training will have. When
the method needs real values to set itself up, the same is built on the CPU from the config
(random weights, nothing loaded from disk).

The estimate, in bytes (documented in docs/preview.md):
- weights: every parameter at its dtype's size (model.dtype, or with `auto` the dtype the
  checkpoint's config names, as loading would give), plus a frozen reference copy for
  preference methods that keep one (no LoRA);
- gradients: the trainable parameters at their dtype's size;
- optimizer: twice that (AdamW's two moments, kept in the parameters' dtype);
- activations kept for the backward pass, for the largest batch (batch_size sequences of the
  split's longest length; twice that for chosen + rejected pairs and KTO's KL batch):
  tokens x layers x (10 x hidden + 3 x intermediate) values, plus heads x length^2 per
  layer and sequence with eager attention; plus the logits (tokens x vocab) at the
  activation width, a float32 copy for the loss and its gradient. A body that does not
  train keeps no activations: one layer's temporaries only.
It is a rough guide (allocator overhead, fused kernels, library buffers and LoRA's dropout
copies of its layers' inputs are not in it; see the measurements in docs/preview.md);
`--time` measures the real peak.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20
TINY = ("tiny-llama", "tiny-gpt2", "tiny-bert")
REAL_BUILD_LIMIT = 1_000_000_000
"""Above this many parameters no random-weight copy is built on the CPU (4 GB at float32)."""


@dataclass
class ModelShape:
    trainable: int
    total: int
    weight_bytes: int
    trainable_bytes: int
    body_trains: bool
    """Whether any parameter inside the body trains (then backward runs through it)."""
    config: object
    causal: bool
    reference_params: int = 0
    """Parameters of a frozen reference copy kept in memory (preference methods without LoRA)."""
    reference_bytes: int = 0


def _sizes(model) -> tuple[int, int, int, int]:
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return (sum(p.numel() for p in trainable), sum(p.numel() for p in params),
            sum(p.numel() * p.element_size() for p in params), sum(p.numel() * p.element_size() for p in trainable))


def _dtype_kwargs(recipe) -> dict:
    import torch

    name = recipe.model.dtype
    return {} if name == "auto" else {"dtype": getattr(torch, name)}


def _config(recipe, tok):
    from transformers import AutoConfig

    from llmtune.models import builtin
    from llmtune.models.load import resolve_source

    m = recipe.model
    if m.name in TINY:
        cfg = builtin.tiny_config(m.name, vocab_size=len(tok))
        cfg.pad_token_id = tok.pad_token_id
        return cfg
    return AutoConfig.from_pretrained(resolve_source(m.name), trust_remote_code=m.trust_remote_code,
                                      revision=m.revision)


def model_shape(recipe, method, labels, tok) -> ModelShape:
    """Counts for the model this recipe trains: built on the meta device, or for real (on the
    CPU) when the method's set-up needs actual weights (e.g. a soft prompt initialised from
    the embeddings' scale)."""
    import torch

    cfg = _config(recipe, tok)
    build = _supervised_shape if method.model_kind == "task" else _trl_shape
    try:
        with torch.device("meta"):
            return build(recipe, method, labels, cfg)
    except (RuntimeError, NotImplementedError, ValueError):  # meta tensors have no values to read
        if _parameters_on_meta(cfg, recipe) > REAL_BUILD_LIMIT:
            raise
        with torch.device("cpu"):
            return build(recipe, method, labels, cfg)


def _parameters_on_meta(cfg, recipe) -> int:
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        body = AutoModel.from_config(cfg, trust_remote_code=recipe.model.trust_remote_code)
    return sum(p.numel() for p in body.parameters())


def _supervised_shape(recipe, method, labels, cfg) -> ModelShape:
    """The supervised loop's model: llmtune's TaskModel with the method applied."""
    from transformers import AutoModel, AutoModelForCausalLM

    from llmtune.models.task_model import TaskModel

    causal = recipe.data.task != "classification"
    body = (AutoModelForCausalLM if causal else AutoModel).from_config(
        cfg, trust_remote_code=recipe.model.trust_remote_code, **_dtype_kwargs(recipe))
    model = TaskModel(body, "causal_lm") if causal else \
        TaskModel(body, recipe.data.task, num_labels=len(labels or [0, 1]), pooling=recipe.model.pooling,
                  head_dropout=recipe.model.head_dropout)
    from llmtune.train.assemble import prepare_for_training

    prepare_for_training(model, method)
    head = {id(p) for p in model.head.parameters()} if model.head is not None else set()
    body_trains = any(p.requires_grad and id(p) not in head for p in model.parameters())
    return ModelShape(*_sizes(model), body_trains, cfg, causal)


def _trl_shape(recipe, method, labels, cfg) -> ModelShape:
    """A model the method loads itself (a trl policy or reward model), wrapped as it trains."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kind = method.model_kind
    if kind == "reward":
        cfg.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(cfg, **_dtype_kwargs(recipe))
    else:
        model = AutoModelForCausalLM.from_config(cfg, **_dtype_kwargs(recipe))
    _, base, base_bytes, _ = _sizes(model)
    model = method.apply(model, causal=kind != "reward")
    keeps_copy = method.holds_reference_copy()
    return ModelShape(*_sizes(model), True, cfg, kind != "reward", base if keeps_copy else 0,
                      base_bytes if keeps_copy else 0)


def dims(cfg) -> dict:
    cfg = getattr(cfg, "text_config", None) or cfg

    def first(*names, default=None):
        for name in names:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return default

    hidden = first("hidden_size", "n_embd", "d_model", default=0)
    return {"hidden": hidden, "layers": first("num_hidden_layers", "n_layer", "num_layers", default=0),
            "intermediate": first("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
            "heads": first("num_attention_heads", "n_head", default=1), "vocab": first("vocab_size", default=0),
            "attention": getattr(cfg, "_attn_implementation", None) or "sdpa"}


def activation_width(precision: str) -> int:
    """Bytes per activation value under train.precision on this machine (as the loop resolves it)."""
    from llmtune.models.precision import autocast_precision

    return 2 if autocast_precision(precision) in ("bf16", "fp16") else 4


def estimate(shape: ModelShape, recipe, batch: int, length: int) -> dict:
    """Bytes of weights, gradients, optimizer state and activations (see the module docstring)."""
    d = dims(shape.config)
    width = activation_width(recipe.train.precision)
    tokens = batch * length
    if shape.body_trains:
        per_layer = tokens * (10 * d["hidden"] + 3 * d["intermediate"])
        if d["attention"] == "eager":
            per_layer += batch * d["heads"] * length * length * 2
        activations = per_layer * d["layers"] * width
    else:
        activations = tokens * (2 * d["hidden"] + d["intermediate"]) * width
    if shape.causal:
        activations += tokens * d["vocab"] * (width + 4 + 4)
    parts = {
        "weights": shape.weight_bytes + shape.reference_bytes,
        "gradients": shape.trainable_bytes,
        "optimizer": 2 * shape.trainable_bytes,
        "activations": activations,
    }
    out = {f"{k}_mib": round(v / MIB, 1) for k, v in parts.items()}
    out["total_mib"] = round(sum(parts.values()) / MIB, 1)
    out["batch"] = {"sequences": batch, "tokens_per_sequence": length, "activation_bytes": width,
                    "attention": d["attention"]}
    return out
