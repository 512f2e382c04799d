"""The precision policy of a run, decided in one place: the dtype weights are loaded in, the
dtype trainable weights are kept in, and the autocast the step runs under.

- `model.dtype: auto` (the default) and `float32`: every weight in float32, whatever dtype the
  checkpoint was saved in (transformers 5 would otherwise load a bf16 checkpoint as bf16 and
  AdamW would step bf16 weights without a float32 master copy). The step runs under bf16
  autocast where the hardware has it (`train.precision: auto`): "fp32 master + bf16 autocast".
- `model.dtype: bfloat16` (or `float16`): every weight, trainable ones included, in that dtype:
  "pure bf16", only when the recipe asks for it.

The loader (models/load.py), the trainers' autocast (train/loop.py, the trl flags) and the
manifest's `precision` record all read these functions, so what is recorded is what ran.
"""

from __future__ import annotations

# recipe `model.dtype` -> the torch dtype name weights are loaded and trained in
WEIGHT_DTYPES = {"auto": "float32", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def weights_dtype(model_dtype: str):
    """The torch dtype every weight of the body (and the head) is loaded and trained in."""
    import torch

    return getattr(torch, WEIGHT_DTYPES[model_dtype])


def autocast_precision(train_precision: str) -> str:
    """`train.precision` resolved against the hardware: "bf16", "fp16" or "fp32" (no autocast).
    `auto` is bf16 on a GPU that has it, else fp32."""
    import torch

    if train_precision != "auto":
        return train_precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def precision_record(model_dtype: str, train_precision: str) -> dict:
    """The manifest's `precision`: weights and trainable dtype, autocast dtype, and the policy
    in words ("fp32 master + bf16 autocast", "pure bf16", "fp32", ...)."""
    weights = WEIGHT_DTYPES[model_dtype]
    autocast = autocast_precision(train_precision)
    autocast_name = {"bf16": "bfloat16", "fp16": "float16"}.get(autocast)
    if weights != "float32":
        policy = f"pure {_SHORT[weights]}"
    elif autocast_name is None:
        policy = "fp32"
    else:
        policy = f"fp32 master + {autocast} autocast"
    return {"weights_dtype": weights, "trainable_dtype": weights, "autocast_dtype": autocast_name, "policy": policy}


def keep_trainable_in(model, model_dtype: str) -> None:
    """Hold every trainable parameter in the policy's dtype. A method may create its weights in
    another dtype (peft keeps adapters in float32 beside a bf16 base); under "pure bf16" they
    follow the base, under the default they already are float32 and nothing changes."""
    _cast(model, model_dtype, only_trainable=True)


def keep_all_in(model, model_dtype: str) -> None:
    """A reopened run's model in the dtype it trained in (peft loads a bf16 run's adapter back
    as float32); a no-op under the default policy."""
    _cast(model, model_dtype, only_trainable=False)


def _cast(model, model_dtype: str, *, only_trainable: bool) -> None:
    dtype = weights_dtype(model_dtype)
    for param in model.parameters():
        if (param.requires_grad or not only_trainable) and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
