"""`llmtune index PATH... --store STORE`: parse, chunk, embed and store documents, incrementally."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from llmtune.cli.store_options import collection_option, store_option, token_option


def index(
    paths: List[Path] = typer.Argument(..., metavar="PATH...", help="Files or folders (walked recursively, hidden "
                                       "entries skipped): .txt, .md, .html, .pdf, and .jsonl/.csv/.tsv/.parquet "
                                       "with a text column."),
    store: str = store_option(),
    model: Optional[str] = typer.Option(None, "--encoder", "--model", "-m", help="The retrieval encoder: minilm "
                                        "(default for a new store), a sentence-embedding model's folder or hub id, "
                                        "or a run of data.task retrieval (method contrastive). An existing store "
                                        "keeps its own; naming another one is an error."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="mean, cls, last or max (default: the run's "
                                          "pooling, else mean). Vectors are always normalised."),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", min=1, help="Tokens per chunk (the embedding "
                                               "model's tokens; default 128 for a new store)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", min=0, help="Tokens shared by consecutive chunks at "
                                          "most (default 32 for a new store)."),
    language: Optional[str] = typer.Option(None, "--language", help="How BM25 analyses text in a new store: "
                                           "english (default: stop words dropped, Snowball stemming), another "
                                           "Snowball language (stemming), or none (plain lower-cased words). "
                                           "Recorded in the store."),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text in .jsonl/.csv/.tsv/"
                                    ".parquet files (each row is indexed on its own)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column naming each row in results (default: "
                                            "the row number)."),
    commit_chunks: int = typer.Option(4096, "--commit-chunks", min=1, help="Files are committed in groups of "
                                      "about this many chunks (a file is never split): a killed run redoes the "
                                      "group it was in."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Texts per forward pass of the embedding model "
                                   "(at most 1,024 tokens a pass: long chunks go fewer at a time, to bound memory)."),
    token: Optional[str] = token_option(),
    collection: str = collection_option(),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code shipped with the "
                                           "checkpoint (only for models you trust)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Index documents into a Milvus store: unchanged files are skipped (by content hash),
    changed ones replaced, deleted ones removed; a killed run leaves the store usable."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.models.encoder import POOLINGS
    from llmtune.index.sync import index_paths

    if pooling is not None and pooling not in POOLINGS:
        raise typer.BadParameter(f"{pooling!r}: choose one of {', '.join(POOLINGS)}", param_hint="--pooling")
    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    summary = index_paths(paths, store, token=token, collection=collection, model=model, pooling=pooling,
                          chunk_tokens=chunk_tokens, overlap=overlap, language=language, text_column=text_column,
                          id_column=id_column,
                          commit_chunks=commit_chunks, batch_size=batch_size, trust_remote_code=trust_remote_code,
                          reporter=reporter)
    if json_out:
        emit_json(summary)
    else:
        from llmtune.cli.tables import print_metrics

        print_metrics(f"index: {summary['store']}", {k: summary[k] for k in (
            "added", "updated", "removed", "unchanged", "chunks_written", "chunks_in_store")} | {
            "skipped": len(summary["skipped"]), "seconds": summary["seconds"]["total"]})


def register(app: typer.Typer) -> None:
    app.command("index", short_help="Index documents into a Milvus store (incremental).")(index)
