"""Stale caches: the tokenized-data cache is keyed by everything that changes its content
(data bytes, tokenizer, chat template, prompt template, max length, column mapping,
encoding code), so a change is never answered with yesterday's token ids."""

from __future__ import annotations

import json

import pytest

from llmtune.data import cache, encode
from llmtune.data.pipeline import prepare_data
from llmtune.models.builtin import load_tiny_tokenizer
from llmtune.recipe import recipe_from_dict


def data_cfg(train: str, task: str = "sft", **data):
    raw = {"model": {"name": "tiny-llama"}, "method": {"name": "full"},
           "data": {"task": task, "train": train, "eval_fraction": 0.0, "max_length": 64, **data}}
    return recipe_from_dict(raw).recipe.data


@pytest.fixture
def sft_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"instruction": f"say {w}", "output": f"{w} {w}"} for w in ("hi", "yes", "no", "maybe")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_input_of_the_encoding_changes_the_key(sft_file, tmp_path):
    tok = load_tiny_tokenizer()
    base = prepare_data(data_cfg(str(sft_file)), tok)
    keys = {"base": base.fingerprint["cache_key"]}

    keys["max_length"] = prepare_data(data_cfg(str(sft_file), max_length=32), tok).fingerprint["cache_key"]
    keys["prompt_template"] = prepare_data(
        data_cfg(str(sft_file), prompt_template="Q: {instruction}\nA: "), tok).fingerprint["cache_key"]
    keys["columns"] = prepare_data(
        data_cfg(str(sft_file), columns={"input": "context"}), tok).fingerprint["cache_key"]
    keys["truncation_side"] = prepare_data(
        data_cfg(str(sft_file), truncation_side="left"), tok).fingerprint["cache_key"]

    chat_tok = load_tiny_tokenizer()
    chat_tok.chat_template = chat_tok.chat_template + "{# edited #}"
    keys["chat_template"] = prepare_data(data_cfg(str(sft_file)), chat_tok).fingerprint["cache_key"]

    vocab_tok = load_tiny_tokenizer()
    vocab_tok.add_tokens(["brandnewtoken"])
    keys["tokenizer"] = prepare_data(data_cfg(str(sft_file)), vocab_tok).fingerprint["cache_key"]

    assert len(set(keys.values())) == len(keys), keys


def test_edited_data_file_is_re_encoded_not_served_stale(sft_file, tmp_path):
    tok = load_tiny_tokenizer()
    cfg = data_cfg(str(sft_file))
    before = prepare_data(cfg, tok)
    # Same path, same size class, one word changed: the content hash sees it.
    sft_file.write_text(sft_file.read_text().replace("maybe maybe", "never never"))
    after = prepare_data(cfg, tok)
    assert after.fingerprint["cache_key"] != before.fingerprint["cache_key"]
    assert tok.decode(after.train[-1]["input_ids"]).count("never") == 2
    assert "never" not in tok.decode(before.train[-1]["input_ids"])


def test_cache_hit_is_used_and_a_damaged_entry_is_rebuilt(sft_file, tmp_path, monkeypatch):
    tok = load_tiny_tokenizer()
    cfg = data_cfg(str(sft_file))
    first = prepare_data(cfg, tok)
    entry = cache.cache_dir() / f"{first.fingerprint['cache_key']}.json"
    assert entry.is_file()

    def boom(*a, **kw):
        raise AssertionError("encoded again despite a valid cache entry")

    monkeypatch.setattr(encode, "encode_sft", boom)
    assert prepare_data(cfg, tok).train == first.train  # served from the cache
    monkeypatch.undo()

    for damage in ("{not json", '{"train": []}', "[]"):  # cut short, wrong shape
        entry.write_text(damage)
        assert prepare_data(cfg, tok).train == first.train


def test_encoding_code_is_part_of_the_key(monkeypatch):
    parts = {"train": "x", "tokenizer": "t"}
    monkeypatch.setattr(cache, "_code_fingerprint", lambda: "old code")
    old = cache.cache_key(**parts)
    monkeypatch.setattr(cache, "_code_fingerprint", lambda: "new code")
    assert cache.cache_key(**parts) != old


def test_unwritable_cache_does_not_stop_a_run(sft_file, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("LLMTUNE_CACHE", str(blocker))  # mkdir under a file fails
    data = prepare_data(data_cfg(str(sft_file)), load_tiny_tokenizer())
    assert len(data.train) == 4


def test_tokenizer_hash_is_the_same_before_and_after_use():
    """A tokenizer called with truncation/padding remembers those settings; they are not
    part of what it is, so neither the cache key nor the manifest may change with them."""
    tok = load_tiny_tokenizer()
    before = cache.tokenizer_fingerprint(tok)
    tok(["a b c d e f", "g"], truncation=True, max_length=3, padding=True)
    assert cache.tokenizer_fingerprint(tok) == before
    other = load_tiny_tokenizer()
    other.add_tokens(["zzz_new"])
    assert cache.tokenizer_fingerprint(other) != before
