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
    mode: str = typer.Option("dense", "--mode", help=MODE_HELP),
    filters: List[str] = typer.Option([], "--filter", help=FILTER_HELP),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Length of the answer at most."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="If the best chunk's dense cosine is below "
                                              "this, say that no indexed source answers instead of generating "
                                              "(default: the value calibrated for the store's model, see "
                                              "docs/indexing.md; none for other models). 0 or less: always answer."),
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
    from llmtune.index.retrieve import parse_filters

    globs = parse_filters(filters)
    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    result = _ask(question, store, token, collection, k, mode, globs, min_score, model, recipe, max_new_tokens,
                  trust_remote_code)
    if result["sources_dropped"]:
        reporter.warn(f"{result['sources_dropped']} of {k} sources did not fit the model's context and were "
                      f"left out (lower -k or --max-new-tokens)")
    if json_out:
        emit_json(result)
        return
    print(result["answer"] or "(the model gave no answer)")
    if not result["answered"]:
        print(f"(the best chunk's cosine {result['best_score']:.3f} is below --min-score {result['min_score']}; "
              f"nearest chunks:)")
    listed = result["sources"] if result["answered"] else result["nearest"]
    print("\nSources:" if listed else "\nSources: none found")
    for s in listed:
        loc = f" {s['locator']}" if s["locator"] else ""
        print(f"  [{s['n']}] {s['source']}{loc} chars {s['start']}-{s['end']}")


def _ask(question: str, store: str, token, collection: str, k: int, mode: str, globs: list[str], min_score,
         model, recipe, max_new_tokens: int, trust_remote_code: bool) -> dict:
    """Retrieve; below the threshold say so; else generate, then cite what the answer took."""
    from llmtune.index.analyzer import analyzer_for
    from llmtune.index.answer import answer, cite, load_answer_model, min_score_for, refusal
    from llmtune.index.retrieve import Retriever, open_store

    st, settings = open_store(store, token, collection)
    with st:
        r = Retriever(st, settings)
        hits = r.search([question], k, mode, globs)[0]
        nearest = hits if mode == "dense" else r.search([question], 1, "dense", globs)[0]
    best = nearest[0].score if nearest else -1.0
    threshold = min_score_for(settings.model, min_score)
    if threshold is not None and threshold > 0 and best < threshold:
        return refusal(question, best, threshold, hits)
    lm = load_answer_model(model, recipe, trust_remote_code=trust_remote_code)
    result = answer(question, hits, lm, max_new_tokens=max_new_tokens)
    analyzer = analyzer_for(settings.analyzer["language"], settings.analyzer["stop_words"])
    result["answer"], result["citations_added"] = cite(result["answer"], result["sources"], analyzer)
    return result | {"best_score": best, "min_score": threshold}


def register(app: typer.Typer) -> None:
    app.command("ask", short_help="Answer a question from a store's top chunks, with sources.")(ask)
