"""Prefix tuning at the attention function: learned keys/values in front of every layer's own.

transformers routes every attention call of BERT, Llama and GPT-2 through the function
registered for `config._attn_implementation`, passing the attention module (which carries
`layer_idx`), the projected query/key/value (after RoPE, after the KV cache update) and the
4-D mask the model built. Registering our own function there is the one place where a
prefix can be added for encoders and decoders alike, and where `generate()` cannot bypass
it: the cache only ever holds real tokens and the prefix is put in front on every call.

The function below looks for a prefix source on the attention module; a module without one
(or a model that never got a prefix) runs plain SDPA, so registering is harmless.
"""

from __future__ import annotations

import torch

ATTN_NAME = "llmtune_prefix_sdpa"
# Attribute on each attention module that points at the model's PrefixEncoder. Set through
# the instance __dict__ so that nn.Module does not register the encoder once per layer.
SOURCE_ATTR = "_llmtune_prefix_source"

_registered = False


def register_prefix_attention() -> str:
    """Make ATTN_NAME a valid attn_implementation (idempotent); return the name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTN_NAME, prefix_sdpa_attention)
        # Without a mask function under the same name, transformers builds no mask at all
        # for an unknown implementation and padding would silently be attended to.
        AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
        _registered = True
    return ATTN_NAME


def prefix_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    source = module.__dict__.get(SOURCE_ATTR)
    if source is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    prefix_key, prefix_value = source.key_value(module.layer_idx)  # (kv_heads, n, head_dim) each
    if prefix_key.shape[0] != key.shape[1] or prefix_key.shape[-1] != key.shape[-1]:
        raise RuntimeError(
            f"prefix for layer {module.layer_idx} has {prefix_key.shape[0]} heads x {prefix_key.shape[-1]} dims, "
            f"the model's keys {key.shape[1]} x {key.shape[-1]}: the prefix was built for another model")
    batch = key.shape[0]
    prefix_key = prefix_key.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
    prefix_value = prefix_value.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
    is_causal = kwargs.pop("is_causal", None)
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    mask = extend_mask(attention_mask, prefix_key.shape[2], query.shape[2], key.shape[2], is_causal, key.device)
    key = torch.cat([prefix_key, key], dim=2)
    value = torch.cat([prefix_value, value], dim=2)
    # With a mask given, SDPA's is_causal must be off (the mask carries the causality).
    return sdpa_attention_forward(module, query, key, value, mask, is_causal=False if mask is not None else is_causal,
                                  **kwargs)


def extend_mask(mask: torch.Tensor | None, n_prefix: int, q_len: int, kv_len: int, is_causal: bool,
                device: torch.device | None = None):
    """The model's mask over (query, real keys), widened so every query sees the n prefix slots.

    Forms that arrive here: None (no padding; causality, if any, left to SDPA's is_causal),
    a boolean keep-mask (True = attend) or an additive float mask (0 = attend), each of shape
    (batch, 1 or heads, q_len, kv_len)."""
    if mask is None:
        if not (is_causal and q_len > 1):
            return None  # full attention over prefix + keys: nothing to mask
        # SDPA's is_causal aligns top-left and would hide the real keys behind the prefix;
        # build the causal pattern explicitly. Queries are the last q_len of the kv_len
        # positions (a KV cache may hold earlier ones).
        q_pos = torch.arange(kv_len - q_len, kv_len, device=device).unsqueeze(1)
        mask = (torch.arange(kv_len, device=device).unsqueeze(0) <= q_pos).view(1, 1, q_len, kv_len)
    shape = (*mask.shape[:-1], n_prefix)
    if mask.dtype == torch.bool:
        keep = torch.ones(shape, dtype=torch.bool, device=mask.device)
    else:
        keep = torch.zeros(shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([keep, mask], dim=-1)


class PrefixEncoder(torch.nn.Module):
    """The trainable prefixes, laid out (layer, key|value, kv_head, token, head_dim).

    Direct: that tensor is the parameter. Reparameterised (Li & Liang 2021): a smaller
    per-token embedding goes through a two-layer tanh MLP that emits every layer's keys and
    values; the MLP steadies training and is folded away at save time (only its output
    matters once trained)."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, num_tokens: int, *,
                 mlp_hidden: int | None = None, embed_dim: int | None = None):
        super().__init__()
        self.shape = (num_layers, 2, kv_heads, num_tokens, head_dim)
        self._current: torch.Tensor | None = None
        if mlp_hidden is None:
            # Standard normal: about the scale of real keys and values (MiniLM: std 0.8-1.3 and 0.5-0.7).
            self.prefix = torch.nn.Parameter(torch.randn(self.shape))
            self.embedding: torch.nn.Parameter | None = None
            self.mlp: torch.nn.Module | None = None
        else:
            self.prefix = None
            self.embedding = torch.nn.Parameter(torch.randn(num_tokens, embed_dim))
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(embed_dim, mlp_hidden), torch.nn.Tanh(),
                torch.nn.Linear(mlp_hidden, num_layers * 2 * kv_heads * head_dim))

    @classmethod
    def from_tensor(cls, prefix: torch.Tensor) -> "PrefixEncoder":
        layers, _, kv_heads, tokens, head_dim = prefix.shape
        enc = cls(layers, kv_heads, head_dim, tokens)
        with torch.no_grad():
            enc.prefix.copy_(prefix)
        return enc

    def forward(self) -> torch.Tensor:
        if self.prefix is not None:
            return self.prefix
        layers, _, kv_heads, tokens, head_dim = self.shape
        assert self.mlp is not None  # no stored prefix: the MLP makes it
        out = self.mlp(self.embedding)  # (tokens, layers * 2 * kv_heads * head_dim)
        return out.view(tokens, layers, 2, kv_heads, head_dim).permute(1, 2, 3, 0, 4)

    def key_value(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Within one forward of the model every layer reads the same computed prefix.
        kv = self._current if self._current is not None else self()
        return kv[layer_idx, 0], kv[layer_idx, 1]


def text_key_values(body: torch.nn.Module, ids: list[int], num_tokens: int) -> torch.Tensor:
    """The keys and values `body` computes at every layer for `ids` (repeated to fill
    `num_tokens`, then cut), laid out as a prefix: (layer, key|value, kv_head, token, head_dim).
    Read from the key/value cache of one plain forward pass, before any prefix is installed."""
    ids = (ids * (num_tokens // len(ids) + 1))[:num_tokens]
    was_training = body.training
    body.eval()
    device = next(body.parameters()).device
    out = body(input_ids=torch.tensor([ids], device=device), use_cache=True)
    body.train(was_training)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not getattr(cache, "layers", None):
        from llmtune.errors import UserError

        raise UserError(f"method.init text: {type(body).__name__} keeps no key/value cache to read the text's keys "
                        f"and values from (an encoder); use init: random")
    layers = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]
    return torch.stack(layers).float().cpu()


def attention_shape(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) from a transformers config (BERT, Llama, GPT-2 names)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def install_prefix(body: torch.nn.Module, encoder: PrefixEncoder) -> int:
    """Attach `encoder` to `body` and route its attention through the prefix function.

    Returns how many attention modules now read the prefix (0 means the architecture does not
    call transformers' attention interface, and the prefix would be ignored)."""
    body.llmtune_prefix = encoder
    name = register_prefix_attention()
    body.set_attn_implementation(name)
    if body.config._attn_implementation != name:
        return 0
    wired = 0
    for module in body.modules():
        if isinstance(getattr(module, "layer_idx", None), int) and not getattr(module, "is_cross_attention", False):
            module.__dict__[SOURCE_ATTR] = encoder
            wired += 1
    body.register_forward_pre_hook(_compute_prefix)
    body.register_forward_hook(_drop_prefix)
    return wired


# One prefix computation per model call (the MLP is not rerun by every layer), dropped after
# the call so that no autograd graph outlives it. The hooks find the encoder through the
# module they are called on, so a deep copy of the model uses its own copy.
def _compute_prefix(body, args):
    body.llmtune_prefix._current = body.llmtune_prefix()


def _drop_prefix(body, args, output):
    body.llmtune_prefix._current = None
