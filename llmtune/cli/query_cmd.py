"""`llmtune query --store STORE "text"`: the top-k documents (or chunks) with scores, sources and
offsets; `--input queries.jsonl --out hits.jsonl` answers many queries for one start-up."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from llmtune.cli.store_options import collection_option, store_option, token_option

MODE_HELP = ("dense (embedding cosine), bm25 (llmtune's BM25 with the store's analyzer and statistics) or hybrid: "
             "reciprocal rank fusion of both lists, chosen over a weighted sum because it needs no score "
             "calibration (BM25 scores are unbounded, cosines sit in a narrow band).")
PER_HELP = ("document (default): -k counts documents (a file, or a row of a table file), each ranked by its "
            "best chunk and listing the chunks found in it; chunk: -k counts chunks.")
FILTER_HELP = ("source=GLOB: only chunks of files whose absolute path matches (a relative glob is taken from "
               "the current folder; * also matches /). Repeat for any of several.")


def query(
    text: Optional[str] = typer.Argument(None, metavar="TEXT", help="What to search for (or --input)."),
    store: str = store_option(),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="How many documents (or chunks: --per chunk)."),
    per: str = typer.Option("document", "--per", help=PER_HELP),
    mode: str = typer.Option("dense", "--mode", help=MODE_HELP),
    filters: List[str] = typer.Option([], "--filter", help=FILTER_HELP),
    model: Optional[str] = typer.Option(None, "--encoder", "--model", "-m", help="Embedding model; must be the "
                                        "store's (the default)."),
    input_: Optional[Path] = typer.Option(None, "--input", help="Many queries: a .jsonl file (a `text` field and "
                                          "an optional `id` per row) or a .txt file (one query per line)."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --input: the .jsonl file the hits go to, one row "
                                       "per query. Rows already there are kept and their queries skipped."),
    token: Optional[str] = token_option(),
    collection: str = collection_option(),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Search a store built by `llmtune index`."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.index.batch_query import read_queries, run_batch
    from llmtune.index.documents import PER, search_documents
    from llmtune.index.retrieve import Retriever, open_store, parse_filters

    if per not in PER:
        raise typer.BadParameter(f"{per!r}: choose document or chunk", param_hint="--per")
    if (text is None) == (input_ is None) or (input_ is None) != (out is None):
        raise typer.BadParameter("give a query TEXT, or --input FILE with --out FILE", param_hint="TEXT")
    globs = parse_filters(filters)
    queries = read_queries(input_) if input_ is not None else None
    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    st, settings = open_store(store, token, collection)
    with st:
        retriever = Retriever(st, settings, model=model)
        if queries is not None:
            summary = run_batch(retriever, queries, out, k=k, mode=mode, per=per, globs=globs, reporter=reporter)
        elif per == "document":
            hits = search_documents(retriever, [text], k, mode, globs)[0]
        else:
            hits = retriever.search([text], k, mode, globs)[0]
    if queries is not None:
        if json_out:
            emit_json(summary)
        else:
            reporter.log(f"query: {summary['searched']} searched, {summary['kept']} kept from {out}; "
                         f"{summary['seconds']} s")
        return
    if json_out:
        emit_json({"query": text, "mode": mode, "k": k, "per": per, "store": st.loc.describe(),
                   "search_path": st.search_path(), "hits": [h.to_dict() for h in hits]})
        return
    _print_hits(hits, per)


def _print_hits(hits: list, per: str) -> None:
    if not hits:
        print(f"no matching {per}s")
    for h in hits:
        snippet = " ".join(h.text.split())
        more = f" (+{len(h.chunks) - 1} more chunks)" if per == "document" and len(h.chunks) > 1 else ""
        print(f"{h.rank:>3}. {h.score:.4f}  {h.where()}{more}\n     {snippet[:240]}"
              f"{'...' if len(snippet) > 240 else ''}")


def register(app: typer.Typer) -> None:
    app.command("query", short_help="Search a store built by `llmtune index`.")(query)
