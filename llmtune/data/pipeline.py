"""From a recipe's data section to tokenized train/eval examples (cached)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmtune.data import cache, encode
from llmtune.data.readers import Row, data_fingerprint, read_hub, read_rows
from llmtune.errors import DataError


ENCODE_CHUNK = 2048
"""Rows tokenized per call: big enough for the fast tokenizer's batching, small enough that
no split's token lists are ever all in memory at once (they go to the Arrow cache)."""


@dataclass
class Prepared:
    train: Sequence[dict]
    """Examples (memory-mapped from the cache: data/arrow_store.py), or a list when the
    cache cannot be written."""
    eval: Sequence[dict]
    labels: list[str] | None
    fingerprint: dict[str, str]
    summary: dict = field(default_factory=dict)


def read_source(src) -> tuple[list[Row], str]:
    """Rows and a fingerprint of where they came from (`src.path` is absolute: the recipe
    loader resolved it)."""
    if src.path is not None:
        path = Path(src.path)
        return read_rows(path, src.limit), data_fingerprint(path) if path.exists() else ""
    return read_hub(src.hub, src.subset, src.split, src.limit), f"hub:{src.hub}/{src.subset}/{src.split}"


def split_rows(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    if fraction <= 0:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(rows) * fraction)))
    if n_eval >= len(rows):
        raise DataError(f"data.eval_fraction {fraction} leaves no training rows out of {len(rows)}")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def read_splits(data_cfg) -> tuple[list[Row], list[Row], str, str]:
    """Train rows, eval rows (`data.eval`, or the held-out part of `data.train`) and a
    fingerprint of each. A held-out split's fingerprint includes the train file's, so two
    runs score the same eval rows only if they split the same file the same way."""
    train_rows, train_fp = read_source(data_cfg.train)
    if data_cfg.eval is not None:
        eval_rows, eval_fp = read_source(data_cfg.eval)
    else:
        train_rows, eval_rows = split_rows(train_rows, data_cfg.eval_fraction, data_cfg.split_seed)
        eval_fp = f"heldout:{data_cfg.eval_fraction}:{data_cfg.split_seed}:{train_fp}"
    return train_rows, eval_rows, train_fp, eval_fp


def prepare_data(data_cfg, tok, store_cache: bool = True) -> Prepared:
    """`store_cache=False` reads the cache but never writes it (`llmtune preview` writes nothing)."""
    train_rows, eval_rows, train_fp, eval_fp = read_splits(data_cfg)
    labels = None
    if data_cfg.task == "classification":
        labels = encode.label_names(train_rows, data_cfg.columns.label, data_cfg.labels)
    key = cache.cache_key(
        train=train_fp, eval=eval_fp, tokenizer=cache.tokenizer_fingerprint(tok),
        data=data_cfg.model_dump(mode="json"), labels=labels,
    )
    cached = cache.load_cached(key)
    if cached is None:
        cached = _encode_and_cache(key, train_rows, eval_rows, tok, data_cfg, labels, store_cache)
    source = data_cfg.train.path or data_cfg.train.hub
    if not cached["train"]:
        raise DataError(f"{source}: no usable training rows out of {len(train_rows)} "
                        f"({_left_out(cached['summary'])})")
    if eval_rows and not cached["eval"]:
        raise DataError(f"{data_cfg.eval.path or data_cfg.eval.hub if data_cfg.eval else source}: no usable "
                        f"evaluation rows out of {len(eval_rows)} ({_left_out(cached['summary'])})")
    return Prepared(cached["train"], cached["eval"], labels,
                    {"train": train_fp, "eval": eval_fp, "cache_key": key}, cached["summary"])


def _render_summary(stats) -> dict:
    """How sft rows were rendered (prompt style, how assistant masks were found), when it applies."""
    out = {"prompt_style": stats.prompt_style, "assistant_masks": stats.assistant_masks or None,
           "markers_failed": stats.markers_failed or None}
    return {k: v for k, v in out.items() if v is not None}


def _left_out(summary: dict) -> str:
    return (f"{summary.get('dropped_empty', 0)} dropped as empty, {summary.get('dropped_truncated', 0)} "
            f"dropped because max_length cut off the response")


def _encode_and_cache(key, train_rows, eval_rows, tok, cfg, labels, store_cache: bool = True) -> dict:
    """Encode chunk by chunk straight into the cache and read it back memory-mapped; when
    the cache cannot (or must not) be written, encode into memory instead."""
    writer = cache.CacheWriter(key) if store_cache else None
    if writer is not None and writer.ok:
        stats = encode.EncodeStats()
        writer.write_split("train", _chunks(train_rows, tok, cfg, labels, stats))
        if eval_rows and writer.ok:
            writer.write_split("eval", _chunks(eval_rows, tok, cfg, labels, stats))
        writer.finish(_summary(stats, train_rows, eval_rows))
        loaded = cache.load_cached(key) if writer.ok else None
        if loaded is not None:
            return loaded
    stats = encode.EncodeStats()
    train = [e for chunk in _chunks(train_rows, tok, cfg, labels, stats) for e in chunk]
    evals = [e for chunk in _chunks(eval_rows, tok, cfg, labels, stats) for e in chunk] if eval_rows else []
    return {"train": train, "eval": evals, "summary": _summary(stats, train_rows, eval_rows)}


def _summary(stats, train_rows, eval_rows) -> dict:
    return {"truncated": stats.truncated, "dropped_empty": stats.dropped_empty,
            "dropped_truncated": stats.dropped_truncated, "train_rows": len(train_rows), "eval_rows": len(eval_rows),
            **_render_summary(stats)}


def _chunks(rows, tok, cfg, labels, stats):
    for start in range(0, len(rows), ENCODE_CHUNK):
        part = rows[start:start + ENCODE_CHUNK]
        if cfg.task == "classification" and cfg.empty_rows == "drop" and len(rows) > len(part) and \
                all(not (encode._text(r, cfg.columns.text) or "").strip() for r in part):
            # A chunk of only empty rows: dropped here, since the encoder would take it for
            # "every row is empty" (which is only an error for the whole file).
            stats.dropped_empty += len(part)
            continue
        yield _encode(part, tok, cfg, labels, stats)


def _encode(rows, tok, cfg, labels, stats):
    if cfg.task == "classification":
        return encode.encode_classification(rows, tok, cfg, labels, stats)
    if cfg.task == "causal_lm":
        return encode.encode_causal_lm(rows, tok, cfg, stats)
    if cfg.task == "sft":
        return encode.encode_sft(rows, tok, cfg, stats)
    raise DataError(f"data.task {cfg.task!r} is trained by a preference/RL method, not the supervised loop")
