"""`llmtune query --store STORE "text"`: the top-k chunks with scores, sources and offsets."""

from __future__ import annotations

from typing import List, Optional

import typer

from llmtune.cli.store_options import collection_option, store_option, token_option

MODE_HELP = ("dense (embedding cosine), bm25 (Milvus's BM25 on the chunk text) or hybrid: reciprocal rank fusion "
             "(k=60) of both lists, chosen over a weighted sum because it needs no score calibration (BM25 "
             "scores are unbounded, cosines sit in a narrow band).")
FILTER_HELP = ("source=GLOB: only chunks of files whose absolute path matches (a relative glob is taken from "
               "the current folder; * also matches /). Repeat for any of several.")


def query(
    text: str = typer.Argument(..., metavar="TEXT", help="What to search for."),
    store: str = store_option(),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="How many chunks."),
    mode: str = typer.Option("hybrid", "--mode", help=MODE_HELP),
    filters: List[str] = typer.Option([], "--filter", help=FILTER_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Embedding model; must be the store's (the "
                                        "default)."),
    token: Optional[str] = token_option(),
    collection: str = collection_option(),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Search a store built by `llmtune index`."""
    from llmtune.cli.common import emit_json
    from llmtune.console import quiet_third_party
    from llmtune.index.retrieve import Retriever, open_store, parse_filters

    globs = parse_filters(filters)
    quiet_third_party(False)
    st, settings = open_store(store, token, collection)
    with st:
        hits = Retriever(st, settings, model=model).search([text], k, mode, globs)[0]
    if json_out:
        emit_json({"query": text, "mode": mode, "k": k, "store": st.loc.describe(),
                   "hits": [h.to_dict() for h in hits]})
        return
    if not hits:
        print("no matching chunks")
    for h in hits:
        snippet = " ".join(h.text.split())
        print(f"{h.rank:>3}. {h.score:.4f}  {h.where()}\n     {snippet[:240]}{'...' if len(snippet) > 240 else ''}")


def register(app: typer.Typer) -> None:
    app.command("query", short_help="Search a store built by `llmtune index`.")(query)
