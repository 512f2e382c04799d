"""`llmtune embed` as a library call: read a file in chunks, embed, write, summarise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from llmtune.console import Reporter
from llmtune.errors import DataError
from llmtune.embed.inputs import count_rows, input_kind, read_chunks
from llmtune.embed.writers import check_output, open_writer, output_path

if TYPE_CHECKING:
    from llmtune.embed.loading import Loaded
    from llmtune.models.encoder import Encoder

CHUNK_ROWS = 8192
"""Rows read, embedded and written at a time: memory stays flat whatever the input size,
and length sorting inside a chunk this size leaves almost no padding."""


def default_output(input_path: Path) -> Path:
    return Path.cwd() / f"{Path(input_path).stem}.embeddings.parquet"


def encoder_for(loaded: Loaded, *, pooling: str | None = None, normalize: bool | None = None,
                max_length: int | None = None, truncation_side: str = "right", batch_size: int = 32,
                precision: str = "auto", reporter: Reporter | None = None) -> Encoder:
    """The encoder `llmtune embed` uses for `loaded`: what is not given defaults to the model's
    own (a run's pooling and max_length; a sentence-transformers folder's pooling and
    normalisation), else mean pooling, no normalising, 512 tokens. `llmtune serve` embeds
    through this too, so a served vector is the vector `llmtune embed` writes."""
    from llmtune.models.encoder import Encoder

    if loaded.differs and pooling is None and reporter is not None:
        reporter.warn(f"{loaded.source}: its sentence-transformers pipeline has {', '.join(loaded.differs)}, which "
                      f"llmtune does not run; these vectors differ from SentenceTransformer(...).encode")
    return Encoder(loaded.tokenizer, loaded.body, pooling=pooling or loaded.pooling or "mean",
                   normalize=bool(loaded.normalize) if normalize is None else normalize,
                   max_length=max_length or loaded.max_length or 512, truncation_side=truncation_side,
                   batch_size=batch_size, precision=precision)


def embed_file(model: str, input_path: Path, out: Path | None = None, *, text_column: str = "text",
               id_column: str | None = None, pooling: str | None = None, normalize: bool | None = None,
               max_length: int | None = None, truncation_side: str = "right", batch_size: int = 32,
               precision: str = "auto", chunk_rows: int = CHUNK_ROWS, trust_remote_code: bool = False,
               reporter: Reporter | None = None) -> dict:
    """Embed every row of `input_path` with `model` (a model name or a run directory) into
    `out`. `pooling` and `normalize` default to the model's own (a run's pooling; a
    sentence-transformers folder's pipeline), else mean pooling without normalising. Returns
    a summary (rows, dim, settings, timings)."""
    from llmtune.embed.loading import load_for_embedding

    rep = reporter or Reporter(quiet=True)
    input_path = Path(input_path)
    input_kind(input_path)  # a missing or unreadable input fails before the model loads
    out = output_path(Path(out) if out is not None else default_output(input_path))
    check_output(out, input_path, sidecar_ids=id_column is not None)
    start = time.perf_counter()
    loaded = load_for_embedding(model, trust_remote_code=trust_remote_code)
    encoder = encoder_for(loaded, pooling=pooling, normalize=normalize, max_length=max_length,
                          truncation_side=truncation_side, batch_size=batch_size, precision=precision, reporter=rep)
    normalize = encoder.normalize
    settings = {"model": model, "pooling": encoder.pooling, "normalize": normalize,
                "max_length": encoder.max_length, "truncation_side": truncation_side,
                "dtype": str(next(encoder.body.parameters()).dtype).removeprefix("torch."),
                "device": str(encoder.device)}
    load_seconds = time.perf_counter() - start
    rep.log(f"embedding {input_path} with {model} ({encoder.pooling} pooling, max {encoder.max_length} tokens, "
            f"{settings['dtype']} on {settings['device']})")

    total = count_rows(input_path) if rep.interactive else 0
    t0 = time.perf_counter()
    with open_writer(out, sidecar_ids=id_column is not None, metadata=settings) as writer, \
            rep.progress(total, "embed") as advance:
        for chunk in read_chunks(input_path, text_column=text_column, id_column=id_column, chunk_size=chunk_rows):
            writer.write(chunk.ids, encoder.embed(chunk.texts))
            advance(len(chunk))
        if writer.rows == 0:
            raise DataError(f"{input_path}: no rows found")
    seconds = time.perf_counter() - t0
    if encoder.truncated:
        rep.warn(f"{encoder.truncated} texts were longer than {encoder.max_length} tokens and were cut "
                 f"({truncation_side} side); raise --max-length to keep more")
    rep.log(f"{writer.rows} rows -> {out} ({writer.rows / max(seconds, 1e-9):.0f} rows/s)")
    return {"input": str(input_path), "output": str(out), "rows": writer.rows, "dim": encoder.dim,
            **settings, "truncated": encoder.truncated, "ids": "column " + id_column if id_column else "row index",
            "ids_file": str(writer.sidecar) if getattr(writer, "sidecar", None) else None,
            "load_seconds": round(load_seconds, 3), "embed_seconds": round(seconds, 3),
            "rows_per_s": round(writer.rows / max(seconds, 1e-9), 1)}
