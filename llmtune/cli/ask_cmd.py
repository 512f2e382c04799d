"""`llmtune ask --store STORE "question"`: retrieve, then a local causal LM answers from the sources."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from llmtune.cli.query_cmd import FILTER_HELP, MODE_HELP
from llmtune.cli.store_options import collection_option, store_option, token_option


def ask(
    question: str = typer.Argument(..., metavar="QUESTION"),
    store: str = store_option(),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The causal LM that answers: a built-in "
                                        "(default smollm2-135m), a local folder or a hub id."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Answer with a run's trained model (a run "
                                          "directory) or a recipe's base model (a recipe file)."),
    k: int = typer.Option(4, "-k", "--top-k", min=1, help="Chunks put into the prompt."),
    mode: str = typer.Option("hybrid", "--mode", help=MODE_HELP),
    filters: List[str] = typer.Option([], "--filter", help=FILTER_HELP),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Length of the answer at most."),
    token: Optional[str] = token_option(),
    collection: str = collection_option(),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code shipped with the "
                                           "checkpoint (only for models you trust)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Answer a question from a store: the top-k chunks and their sources go into the prompt
    of a local causal LM (greedy decoding, stopped where the answer starts repeating itself);
    the answer is printed with those sources."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.index.answer import answer, load_answer_model
    from llmtune.index.retrieve import Retriever, open_store, parse_filters

    globs = parse_filters(filters)
    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    lm = load_answer_model(model, recipe, trust_remote_code=trust_remote_code)  # fails fast, before retrieval
    st, settings = open_store(store, token, collection)
    with st:
        hits = Retriever(st, settings).search([question], k, mode, globs)[0]
    result = answer(question, hits, lm, max_new_tokens=max_new_tokens)
    if result["sources_dropped"]:
        reporter.warn(f"{result['sources_dropped']} of {len(hits)} sources did not fit the model's context and were "
                      f"left out (lower -k or --max-new-tokens)")
    if json_out:
        emit_json(result)
        return
    print(result["answer"] or "(the model gave no answer)")
    print("\nSources:" if result["sources"] else "\nSources: none found")
    for s in result["sources"]:
        loc = f" {s['locator']}" if s["locator"] else ""
        print(f"  [{s['n']}] {s['source']}{loc} chars {s['start']}-{s['end']}")


def register(app: typer.Typer) -> None:
    app.command("ask", short_help="Answer a question from a store's top chunks, with sources.")(ask)
