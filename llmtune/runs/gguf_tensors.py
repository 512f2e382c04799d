"""A transformers causal LM's shape and weights as GGUF keys and tensors, for the
architectures llama.cpp and transformers' GGUF reader both know.

Per architecture: the GGUF architecture name, the keys llama.cpp reads for it, and how a
weight's layout differs between the two worlds. Llama's attention query and key rows are
stored pair-interleaved for llama.cpp's rotary embedding (transformers keeps each head's two
halves apart), and GPT-2's Conv1D weights are stored transposed. Names come from the gguf
package's tensor map.

Quantization: 1-D tensors (norms, biases) stay float32, as llama.cpp's own converter keeps
them; every 2-D weight is stored in the chosen type (the embedding and output matrices of the
4- and 5-bit types in q8_0), or in float16 when its rows do not split into the type's blocks.
`rounded` keeps what each stored weight holds once read back, in transformers' layout, so the
parity check can tell conversion errors from rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from llmtune.errors import UserError

if TYPE_CHECKING:
    import numpy as np

# --quant name -> (gguf.GGMLQuantizationType name, gguf.LlamaFileType name). Only types the
# gguf package's Python code can write; the K-quants (q4_k, q6_k...) need llama.cpp's quantizer.
QUANT_TYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}


def check_quant(quant: str) -> str:
    name = quant.lower()
    if name not in QUANT_TYPES:
        raise UserError(f"--quant {quant}: not a type llmtune can write; use one of {', '.join(QUANT_TYPES)} "
                        f"(K-quants such as q4_k_m: export f16 here, then run llama.cpp's llama-quantize on it)")
    return name


@dataclass
class Written:
    """What `write_tensors` stored."""

    types: dict[str, int] = field(default_factory=dict)
    """GGUF tensor type -> how many tensors were stored in it."""
    fallback_f16: list[str] = field(default_factory=list)
    """Weights stored as float16 because their rows do not split into the type's blocks."""
    rounded: dict[str, Any] = field(default_factory=dict)
    """transformers parameter name -> the weight as the file holds it (float32, transformers'
    layout); empty for f32, whose file holds the weights exactly."""


@dataclass(frozen=True)
class Arch:
    """How one transformers model_type is written."""

    gguf_name: str
    write_keys: Callable[[Any, Any], None]
    """(GGUFWriter, config) -> None: the architecture's keys."""
    to_file: Callable[[str, "np.ndarray", Any], "np.ndarray"] = lambda name, a, config: a
    """(GGUF tensor name, transformers-layout array, config) -> the layout the file stores."""
    transposed: Callable[[str], bool] = lambda name: False
    """Whether the file stores this tensor transposed, so that its quantization blocks run down
    transformers' columns. Said separately from `to_file` on purpose: the parity check rounds
    the run's weights from this alone, so a layout bug in `to_file` is not mirrored there."""
    check: Callable[[Any], list[str]] = lambda config: []
    """What in this config the writer or transformers' reader would not carry over."""


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _decoder_keys(w, config, rope_dims: bool) -> None:
    heads = config.num_attention_heads
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    w.add_rope_freq_base(_rope_theta(config))
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    head_dim = _head_dim(config)
    if rope_dims:
        w.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(config.vocab_size)


def _rope_problems(config) -> list[str]:
    """What a Llama-family config may hold that neither the keys written here nor transformers'
    reader carry: rope scaling, another activation, a sliding window."""
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    problems = [] if kind == "default" else [f"rope scaling {kind!r} (only plain rotary embeddings are written)"]
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config.hidden_act!r} (llama.cpp's Llama-family blocks use SiLU)")
    if getattr(config, "use_sliding_window", False):
        problems.append("use_sliding_window: true (no sliding window is written)")
    return problems


def _llama_problems(config) -> list[str]:
    problems = _rope_problems(config)
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            problems.append(f"{flag}: true (transformers' GGUF reader builds Llama without biases)")
    return problems


def _interleave(a, heads: int):
    """transformers keeps each head's rotary halves apart; llama.cpp wants them as pairs."""
    return a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _rotary_heads(name: str, config) -> int | None:
    if ".attn_q." in name:
        return config.num_attention_heads
    if ".attn_k." in name:
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return None


def _llama_to_file(name, a, config):
    heads = _rotary_heads(name, config)
    return _interleave(a, heads) if heads else a


_CONV1D = (".attn_qkv.weight", ".attn_output.weight", ".ffn_up.weight", ".ffn_down.weight")


def _gpt2_conv1d(name: str) -> bool:
    """GPT-2's Conv1D weights are (in, out) in transformers, the transpose of llama.cpp's."""
    return name.endswith(_CONV1D)


def _gpt2_to_file(name, a, config):
    return a.T.copy() if _gpt2_conv1d(name) else a


def _gpt2_keys(w, config) -> None:
    w.add_context_length(config.n_positions)
    w.add_embedding_length(config.n_embd)
    w.add_block_count(config.n_layer)
    w.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    w.add_head_count(config.n_head)
    w.add_layer_norm_eps(config.layer_norm_epsilon)
    w.add_vocab_size(config.vocab_size)


def _gpt2_problems(config) -> list[str]:
    # transformers' GGUF reader builds GPT-2 from defaults where it maps a key to a field GPT2Config
    # no longer reads (context_length -> n_ctx; feed_forward_length), so only those defaults read back.
    problems = []
    if config.n_positions != 1024:
        problems.append(f"n_positions {config.n_positions} (transformers' GGUF reader builds GPT-2 with 1024 "
                        f"positions, so the file could not be checked against the run)")
    if config.n_inner not in (None, 4 * config.n_embd):
        problems.append(f"n_inner {config.n_inner} (transformers' GGUF reader assumes 4 x n_embd)")
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function {config.activation_function!r} (llama.cpp's GPT-2 uses tanh GELU)")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(config, "reorder_and_upcast_attn", False):
        problems.append("GPT-2 attention variants (scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn)")
    return problems


def _qwen3_problems(config) -> list[str]:
    # transformers' GGUF reader takes Qwen3's head_dim from its config default, not from the file.
    from transformers import Qwen3Config

    default = Qwen3Config().head_dim
    problems = _rope_problems(config)
    if _head_dim(config) != default:
        problems.append(f"head_dim {_head_dim(config)} (transformers' GGUF reader builds Qwen3 with {default})")
    return problems


ARCHITECTURES: dict[str, Arch] = {
    "llama": Arch("llama", lambda w, c: _decoder_keys(w, c, rope_dims=True), _llama_to_file,
                  check=_llama_problems),
    "qwen2": Arch("qwen2", lambda w, c: _decoder_keys(w, c, rope_dims=False), check=_rope_problems),
    "qwen3": Arch("qwen3", lambda w, c: _decoder_keys(w, c, rope_dims=False), check=_qwen3_problems),
    "gpt2": Arch("gpt2", _gpt2_keys, _gpt2_to_file, _gpt2_conv1d, _gpt2_problems),
}


def arch_for(config) -> Arch:
    """The writer for this config, or exit 2 saying which architectures are covered and why not."""
    model_type = getattr(config, "model_type", None)
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise UserError(f"GGUF export covers the {', '.join(sorted(ARCHITECTURES))} architectures; this run's "
                        f"model is {model_type!r}. Export it as a merged transformers folder instead "
                        f"(`llmtune export RUN --out DIR --merge`) and convert that with llama.cpp's "
                        f"convert_hf_to_gguf.py, which covers more architectures")
    problems = arch.check(config)
    if problems:
        raise UserError(f"GGUF export of this {model_type} model would not compute what the run computes: "
                        f"{'; '.join(problems)}. Export a merged transformers folder instead "
                        f"(`llmtune export RUN --out DIR --merge`)")
    return arch


def write_tensors(writer, body, arch: Arch, quant: str) -> Written:
    """Add every weight of `body` to `writer` in the file's names, layout and type."""
    import gguf

    config = body.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[_arch_enum(arch.gguf_name)], config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    written = Written()
    for hf_name, tensor in body.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # no output.weight: llama.cpp and transformers' reader both tie to the embedding
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"GGUF export: {config.model_type} weight {hf_name!r} has no GGUF tensor name in the "
                            f"gguf package's map; export a merged transformers folder instead (--merge)")
        original = tensor.detach().float().cpu().numpy()
        array = arch.to_file(name, original, config)
        kind = _kind(array, quant, name, written)
        writer.add_tensor(name, _encode(array, kind), raw_dtype=getattr(gguf.GGMLQuantizationType, kind))
        written.types[kind] = written.types.get(kind, 0) + 1
        if kind != "F32":
            written.rounded[hf_name] = _rounded(original, kind, arch.transposed(name))
    return written


def _arch_enum(gguf_name: str) -> str:
    import gguf

    return next(k.name for k, v in gguf.MODEL_ARCH_NAMES.items() if v == gguf_name)


# The embedding and output matrices of the 4- and 5-bit types are stored as q8_0 (llama.cpp's
# quantizer likewise keeps the output matrix wider, in q6_k): every logit goes through the output
# matrix (the embedding itself when tied, as in SmolLM2), and 4 bits there cost most of the drift.
_WIDER = ("token_embd.weight", "output.weight")


def _kind(array, quant: str, name: str, written: Written) -> str:
    """The GGUF type this array is stored in."""
    import gguf

    if array.ndim < 2 or quant == "f32":
        return "F32"
    kind = QUANT_TYPES[quant][0]
    if kind in ("Q5_1", "Q5_0", "Q4_1", "Q4_0") and name in _WIDER:
        kind = "Q8_0"
    block = gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, kind)][0]
    if array.shape[-1] % block:
        written.fallback_f16.append(name)
        return "F16"
    return kind


def _encode(array, kind: str):
    """The bytes (or float array) the file stores for `array` in type `kind`."""
    import gguf
    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.float32)
    if kind == "F32":
        return array
    if kind == "F16":
        return array.astype(np.float16)
    return gguf.quants.quantize(array, getattr(gguf.GGMLQuantizationType, kind))


def _rounded(original, kind: str, transposed: bool):
    """`original` (transformers' layout) as the file holds it once read back: rounded in blocks
    along the rows the file stores. Rows moved whole (Llama's interleaving) round the same."""
    import gguf

    rows = original.T if transposed else original
    back = gguf.quants.dequantize(_encode(rows, kind), getattr(gguf.GGMLQuantizationType, kind))
    back = back.reshape(rows.shape).astype("float32")
    return back.T.copy() if transposed else back


def file_type(quant: str) -> int:
    """general.file_type: the type most weights are stored in."""
    import gguf

    return int(getattr(gguf.LlamaFileType, QUANT_TYPES[quant][1]))
