"""`llmtune embed MODEL|RUN_DIR INPUT --out FILE`: one vector per text, rows in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def embed(
    model: str = typer.Argument(..., metavar="MODEL|RUN_DIR",
                                help="A model (minilm, a local folder, a hub id) or a run directory (embeds "
                                     "with its trained final/ model)."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A .txt file (one text a line) or a .jsonl, "
                                                                 ".csv, .tsv or .parquet file with a text column."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file: .parquet (default), .npy or "
                                                                 ".jsonl. Default: INPUT_STEM.embeddings.parquet."),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column holding row ids (default: the row "
                                                                      "index)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="mean, cls, last or max. Default: the run's "
                                          "pooling, a sentence-transformers folder's own (modules.json), else mean."),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize", help="Scale every vector to unit "
                                             "length (cosine = dot). Default: what a sentence-transformers folder's "
                                             "pipeline does (MiniLM normalises), else not."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Tokens per text; longer texts are "
                                             "cut. Default: a run's data.max_length, else the model's limit."),
    truncation_side: str = typer.Option("right", "--truncation-side", help="Which end of a long text is cut: "
                                                                           "right or left."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Texts per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on a GPU, fp32 on CPU), fp32 or bf16."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code shipped with the "
                                                                              "checkpoint (only for models you "
                                                                              "trust)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary document on stdout."),
) -> None:
    """Embed texts with a model or a trained run: pooled hidden states, one row per input row."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter
    from llmtune.models.encoder import POOLINGS
    from llmtune.embed.run import embed_file

    for flag, value, allowed in (("--pooling", pooling, POOLINGS), ("--truncation-side", truncation_side,
                                 ("right", "left")), ("--precision", precision, ("auto", "fp32", "bf16"))):
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r}: choose one of {', '.join(allowed)}", param_hint=flag)
    summary = embed_file(model, input_path, out, text_column=text_column, id_column=id_column, pooling=pooling,
                         normalize=normalize, max_length=max_length, truncation_side=truncation_side,
                         batch_size=batch_size, precision=precision, trust_remote_code=trust_remote_code,
                         reporter=Reporter(json_mode=json_out))
    if json_out:
        emit_json(summary)
    else:
        from llmtune.cli.tables import print_metrics

        print_metrics(f"embed: {input_path}", summary)


def register(app: typer.Typer) -> None:
    app.command("embed", short_help="Embed texts with a model or a trained run.")(embed)
