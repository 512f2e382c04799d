"""Prompted evaluation of a causal LM: zero/few-shot prompts, one or several templates.

Classification rows are scored by the log-likelihood of each label's verbaliser; sft rows
by generating a response and comparing it with the reference (exact match, token F1).
Each template is scored on the same queries with the same demonstrations, so their
scores differ by the template alone; the best is chosen on one part of the rows and
reported on the other (template_choice.py).
"""

from __future__ import annotations

import time

from llmtune.errors import UserError
from llmtune.evaluate import icl
from llmtune.evaluate.metrics import classification_metrics, generation_metrics
from llmtune.evaluate.prompt_rows import load_rows, resolve_verbalizers, to_prompt_rows
from llmtune.evaluate.template_choice import TemplateScores, assemble, split_queries
from llmtune.evaluate.templates import compile_templates, default_template

HEADLINE = {"classification": "accuracy", "sft": "f1"}
SAMPLES = 3  # prompts and answers kept in eval.json, to see what the numbers mean


def max_positions(body) -> int | None:
    cfg = body.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def evaluate_prompted(body, tok, recipe, limit: int | None, reporter, device, store_demos=None) -> dict:
    """`store_demos(queries, pool, k, store, reporter)` picks demonstrations for `eval.selection:
    store` (llmtune.index.demos.select_from_store): handed in by the caller, since the index
    sits above evaluation."""
    r = recipe
    e, d = r.eval, r.data
    if d.task not in HEADLINE:
        raise UserError(f"eval.shots/templates/verbalizers apply to classification and sft data, not "
                        f"data.task {d.task!r}")
    started = time.perf_counter()
    eval_rows, pool_rows, labels = load_rows(r)
    words = resolve_verbalizers(labels, e.verbalizers) if d.task == "classification" else None
    k = e.shots or 0
    alpaca_chat = _alpaca_through_chat(d, tok, text_prompts=bool(k or e.templates), reporter=reporter)
    queries = to_prompt_rows(eval_rows, d, labels, words, alpaca_chat)[:limit or None]
    if not queries:
        raise UserError("no eval rows left to prompt with (all empty?)")
    chat = queries[0].chat is not None
    if chat and (k or e.templates):
        raise UserError("eval.shots > 0 and eval.templates need alpaca-style rows (instruction/output); "
                        "chat rows are prompted with the tokenizer's chat template, zero-shot only")
    pool = icl.dedupe_pool(to_prompt_rows(pool_rows, d, labels, words)) if k else []
    ranked = _select(queries, pool, k, e, reporter, store_demos)
    templates = compile_templates(e.templates) if e.templates else [default_template(d)]
    answer_sep = e.answer_separator if e.answer_separator is not None else (
        " " if d.task == "classification" else "")
    budget = _budget(body, tok, r, words, answer_sep)
    entries, shared = [], {}
    for template in templates:
        style = icl.PromptStyle(template, e.demo_separator, answer_sep, nearest_last=e.selection in ("nearest", "store"))
        prompts = icl.build_prompts(queries, pool, ranked, style, tok, budget)
        if d.task == "classification":
            score = _score_classification(body, tok, prompts, queries, labels, words, answer_sep, r, device,
                                          shared)
        else:
            score = _score_generation(body, tok, prompts, queries, e, device)
        entries.append(TemplateScores(template.index, template.source, score, _fit_counts(prompts)))
    split = split_queries(len(queries), e.template_select_fraction, e.seed) if len(entries) > 1 else None
    result = assemble(entries, len(queries), HEADLINE[d.task], split, bool(e.templates), reporter.warn)
    _report_shortened(result, len(queries), budget, reporter)
    result["prompting"] = {
        "shots": k, "selection": e.selection if k else None,
        "demo_sets": e.demo_sets if k and e.selection == "random" else None,
        "encoder": e.encoder if k and e.selection == "nearest" else None,
        "store": e.store if k and e.selection == "store" else None,
        "pool": len(pool), "budget": budget, "answer_separator": answer_sep,
        "verbalizers": dict(zip(labels, words)) if words else None,
        "label_score": e.label_score if words else None,
        "shared_prefix": shared or None,
    }
    result["prompt_seconds"] = round(time.perf_counter() - started, 3)
    return result


def _alpaca_through_chat(d, tok, text_prompts: bool, reporter) -> bool:
    """Whether alpaca rows are prompted through the chat template, as data.prompt_style trains
    them. Few-shot demonstrations and eval.templates are text prompts by nature: they keep the
    text form, with a warning when training used the chat template."""
    from llmtune.data.prompt_style import CHAT, resolve_prompt_style

    if d.task != "sft" or d.format == "chat" or resolve_prompt_style(d, tok) != CHAT:
        return False
    if text_prompts:
        reporter.warn("eval.shots/eval.templates build text prompts, but alpaca rows train through the model's chat "
                      "template (data.prompt_style resolves to chat); a model trained so is prompted unlike its "
                      "training here. Set data.prompt_style: plain to train and prompt with the same text")
        return False
    return True


def _select(queries, pool, k, e, reporter, store_demos) -> list[list[int]]:
    if k == 0:
        return [[] for _ in queries]
    if e.selection == "random":
        return icl.select_random(queries, pool, k, e.seed, sets=e.demo_sets)
    if e.selection == "store":
        if store_demos is None:
            raise UserError("eval.selection: store needs the index (run it through `llmtune eval`)")
        return store_demos(queries, pool, k, e.store, reporter)
    from llmtune.models.text_embeddings import cached_text_embeddings

    kw = {"batch_size": e.batch_size, "max_length": e.encoder_max_length, "reporter": reporter}
    pool_vecs, query_vecs = cached_text_embeddings(e.encoder, [[p.key for p in pool], [q.key for q in queries]],
                                                   **kw)
    return icl.select_nearest(query_vecs, pool_vecs, queries, pool, k)


def _budget(body, tok, recipe, words, answer_sep: str) -> int:
    """Tokens a prompt may take: eval.max_length (default data.max_length), within the model's
    positions, less what follows the prompt (the longest label word, or the generated tokens)."""
    e = recipe.eval
    base = e.max_length or recipe.data.max_length
    limit = max_positions(body)
    if words is not None:
        longest = max(len(x) for x in tok([answer_sep + w for w in words], add_special_tokens=False)["input_ids"])
        # +1: tokenized after the prompt, a word can split one token differently than alone.
        budget = min(base, limit or base) - longest - 1
    else:
        budget = min(base, limit - e.generation.max_new_tokens) if limit else base
    if budget < 1:
        raise UserError(f"no room for a prompt: the budget of {base} tokens (model positions: {limit}) is used "
                        f"up by the answer; raise eval.max_length or lower eval.generation.max_new_tokens")
    return budget


def _score_classification(body, tok, prompts, queries, labels, words, answer_sep, recipe, device, shared: dict):
    """Predict every query once; returns metrics on any subset of query positions."""
    from llmtune.evaluate.label_scoring import continuations, score_labels

    e = recipe.eval
    prefix = icl.special_prefix(tok)
    pairs = continuations(tok, prompts, words, answer_sep, prefix)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stats: dict = {}
    scores = score_labels(body, pairs, pad_id=pad, batch_size=e.batch_size, reduce=e.label_score, device=device,
                          share_prefix=e.share_prefix, stats=stats)
    for key, value in stats.items():  # summed over templates
        shared[key] = (shared.get(key, 0) + value) if not isinstance(value, bool) else (shared.get(key) or value)
    preds = scores.argmax(dim=1).tolist()

    def score(idx: list[int]) -> dict:
        metrics = classification_metrics([preds[i] for i in idx], [queries[i].label for i in idx], labels)
        metrics["samples"] = [{"prompt": prompts[i].text, "demos": len(prompts[i].demos),
                               "reference": labels[queries[i].label], "output": labels[preds[i]]}
                              for i in idx[:SAMPLES]]
        return metrics

    return score


def _score_generation(body, tok, prompts, queries, e, device):
    from llmtune.evaluate.generation import generate_texts

    outputs = generate_texts(body, tok, [p.ids for p in prompts], e.generation, batch_size=e.batch_size,
                             device=device)
    refs = [q.answer for q in queries]

    def score(idx: list[int]) -> dict:
        metrics = generation_metrics([outputs[i] for i in idx], [refs[i] for i in idx])
        metrics["samples"] = [{"prompt": prompts[i].text, "demos": len(prompts[i].demos), "reference": refs[i],
                               "output": outputs[i]} for i in idx[:SAMPLES]]
        return metrics

    return score


def _fit_counts(prompts) -> dict:
    return {
        "prompts": len(prompts),
        "prompts_shortened": sum(1 for p in prompts if p.dropped or p.cut),
        "demos_dropped": sum(p.dropped for p in prompts),
        "queries_cut": sum(1 for p in prompts if p.cut),
        "mean_demos": (sum(len(p.demos) for p in prompts) / len(prompts)) if prompts else 0.0,
    }


def _report_shortened(best: dict, n: int, budget: int, reporter) -> None:
    if best["prompts_shortened"]:
        reporter.warn(f"{best['prompts_shortened']} of {n} prompts were over the {budget}-token budget and were "
                      f"shortened: {best['demos_dropped']} demonstrations dropped, {best['queries_cut']} queries "
                      f"cut at the start (raise eval.max_length or lower eval.shots)")
