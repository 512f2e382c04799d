"""Write a tiny Llama GGUF file (random weights, the bundled tiny BPE tokenizer), so the GGUF
conversion path runs in a second without the 93 MB SmolLM2 file. Its 2-D weights are stored
4-bit (Q4_1), like SmolLM2's, so the conversion really dequantizes."""

from __future__ import annotations

import json
from pathlib import Path

from llmtune.models.builtin import TINY_TOKENIZER

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2


def _tokenizer_fields():
    spec = json.loads((TINY_TOKENIZER / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in spec["added_tokens"]}
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    return tokens, [3 if t in special else 1 for t in tokens], merges


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens, token_types, merges = _tokenizer_fields()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama for tests")
    w.add_block_count(LAYERS)
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_unk_token_id(3)
    w.add_add_bos_token(False)

    def matrix(name: str, rows: int, cols: int):
        data = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        quant = gguf.GGMLQuantizationType.Q4_1
        w.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)

    def vector(name: str, n: int):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    head_dim = HIDDEN // HEADS
    matrix("token_embd.weight", len(tokens), HIDDEN)
    matrix("output.weight", len(tokens), HIDDEN)
    vector("output_norm.weight", HIDDEN)
    for i in range(LAYERS):
        vector(f"blk.{i}.attn_norm.weight", HIDDEN)
        vector(f"blk.{i}.ffn_norm.weight", HIDDEN)
        matrix(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
