"""LoRA's update added inside one GEMM: the LoRA method's `fused_forward` (train.fused_forward).

peft's `lora.Linear` computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: after the
two small matmuls it scales the full (tokens, out_features) update and adds it to the base
output, two more passes over the layer's output in the forward and one more (the scale's
gradient) in the backward. Here the last projection, the scale and the add are one
`addmm(base, h, B.T, alpha=scaling)`, whose backward scales only the (tokens, r) side.

The same function of the same parameters: the dropout module is called as peft calls it
(so it draws the same mask from the same generator), and any case this path does not cover
(a merged or disabled adapter, several active adapters, DoRA or another variant, a LoRA
bias, a mixed-adapter batch, mismatched dtypes) goes through peft's own forward unchanged.
The module's class becomes a subclass of peft's, so peft's saving, merging and isinstance
checks are untouched.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F


@functools.cache
def _fused_class() -> type:
    """Made on first use: peft is imported only by runs that have LoRA layers."""
    from peft.tuners.lora.layer import Linear as PeftLoraLinear

    class FusedLoraLinear(PeftLoraLinear):
        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            name = self._fusable_adapter(args, kwargs)
            if name is None:
                return super().forward(x, *args, **kwargs)
            result = self.base_layer(x)
            weight_a = self.lora_A[name].weight
            if result.dtype != weight_a.dtype and not torch.is_autocast_enabled(x.device.type):
                return super().forward(x, *args, **kwargs)
            hidden = F.linear(self.lora_dropout[name](self._cast_input_dtype(x, weight_a.dtype)), weight_a)
            flat = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                               self.lora_B[name].weight.t(), alpha=self.scaling[name])
            return flat.view(result.shape)

        def _fusable_adapter(self, args, kwargs) -> str | None:
            if args or kwargs or self.disable_adapters or self.merged:
                return None
            active = self.active_adapters
            if len(active) != 1:
                return None
            name = active[0]
            if (name not in self.lora_A or name in self.lora_variant or self.lora_B[name].bias is not None
                    or type(self.base_layer) is not nn.Linear or getattr(self, "fan_in_fan_out", False)):
                return None
            return name

    return FusedLoraLinear


def use_fused_lora(model: nn.Module) -> int:
    """Switch every plain peft `lora.Linear` in `model` to the fused forward (in place; no
    parameter or buffer changes). Returns how many."""
    try:
        from peft.tuners.lora.layer import Linear as PeftLoraLinear
    except ImportError:  # peft missing: there is no LoRA layer to fuse
        return 0
    count = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = _fused_class()
            count += 1
    return count
