"""`llmtune ask`: retrieved chunks (numbered, with their sources) go into a prompt, and a
local causal LM answers greedily, stopped where the answer starts to repeat itself.

The prompt goes through the tokenizer's chat template when it has one (instruction-tuned
models such as SmolLM2-Instruct were trained on it), else a plain "Sources / Question /
Answer:" layout. Sources that do not fit the model's positions (less the answer's tokens)
are dropped from the lowest-ranked up, and the output says how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmtune.device import default_device
from llmtune.errors import UserError

DEFAULT_ANSWER_MODEL = "smollm2-135m"
NO_SOURCE = "No indexed source answers this question."
CALIBRATED_MIN_SCORE = {"minilm": 0.504}
"""The best chunk's dense cosine below which `ask` says NO_SOURCE instead of generating, per
embedding model it was calibrated for (on Cranfield: scripts/bench_hybrid.py, docs/indexing.md).
A store built with another model has no default threshold (pass --min-score)."""
CITE_OVERLAP = 0.5
"""A sentence without a citation is attributed to the source sharing the largest share of its
terms, when that share is at least this."""
INSTRUCTIONS = ("Answer the question using only the numbered sources below. Cite the sources you use by number, "
                "like [1]. If the sources do not contain the answer, say that you do not know.")


@dataclass
class AnswerModel:
    tokenizer: object
    body: object
    name: str


@dataclass
class Prompt:
    ids: list[int]
    text: str
    used: list
    """The hits that made it into the prompt, in rank order."""


def load_answer_model(model: str | None, recipe: Path | None, *, trust_remote_code: bool = False) -> AnswerModel:
    if model and recipe:
        raise UserError("give --model or --recipe, not both")
    if recipe is not None:
        return _from_recipe(Path(recipe))
    name = model or DEFAULT_ANSWER_MODEL
    from llmtune.models.load import load_body, load_tokenizer

    tok = load_tokenizer(name, trust_remote_code)
    body = load_body(name, "causal_lm", trust_remote_code=trust_remote_code)
    return AnswerModel(tok, _causal(body, name), name)


def _from_recipe(target: Path) -> AnswerModel:
    """A run directory (its trained model, merged when the method can merge) or a recipe
    file (its base model)."""
    from llmtune.models.load import CAUSAL_TASKS, load_body, load_tokenizer
    from llmtune.runs.open import open_target

    t = open_target(target)
    r = t.recipe
    if t.final is None:
        tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
        body = load_body(r.model.name, "causal_lm", trust_remote_code=r.model.trust_remote_code,
                         revision=r.model.revision)
        return AnswerModel(tok, _causal(body, r.model.name), r.model.name)
    task = t.info.get("task", r.data.task)
    if task not in CAUSAL_TASKS:
        raise UserError(f"{target}: this run trained a {task} model; `ask` needs a causal LM run (causal_lm, sft, "
                        f"preference) or a recipe whose model is one")
    task_model, tok = t.trained_model(), t.tokenizer()
    body = t.method.merge(task_model.body) if t.method.can_merge else task_model.body
    return AnswerModel(tok, _causal(body, str(target)), str(target))


def _causal(body, name: str):
    if not hasattr(body, "generate") or getattr(body.config, "is_encoder_decoder", False):
        raise UserError(f"{name}: not a causal LM, so it cannot write an answer; pass a decoder model")
    if getattr(body.config, "model_type", "") in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet"):
        raise UserError(f"{name} is an encoder ({body.config.model_type}); `ask` needs a causal LM")
    return body.eval()


def _source_block(n: int, hit) -> str:
    return f"[{n}] {hit.where()}\n{hit.text.strip()}"


def build_prompt(tok, question: str, hits: list, budget: int) -> Prompt:
    """The longest prompt with the top hits (in rank order) that fits `budget` tokens."""
    for keep in range(len(hits), -1, -1):
        text, ids = _render(tok, question, hits[:keep])
        if len(ids) <= budget:
            return Prompt(ids, text, hits[:keep])
    raise UserError(f"the question alone is longer than the {budget} tokens the model has room for; shorten it or "
                    f"lower --max-new-tokens")


def _render(tok, question: str, hits: list) -> tuple[str, list[int]]:
    sources = "\n\n".join(_source_block(n, h) for n, h in enumerate(hits, start=1)) or "(no sources found)"
    user = f"Sources:\n\n{sources}\n\nQuestion: {question.strip()}"
    if getattr(tok, "chat_template", None):
        messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, tok(text, add_special_tokens=False)["input_ids"]
    text = f"{INSTRUCTIONS}\n\n{user}\nAnswer:"
    return text, tok(text)["input_ids"]


def answer(question: str, hits: list, model: AnswerModel, *, max_new_tokens: int = 256) -> dict:
    from llmtune.evaluate.prompted import max_positions
    from llmtune.generation.engine import Engine
    from llmtune.generation.params import Request, SamplingParams

    positions = max_positions(model.body) or 2048
    budget = positions - max_new_tokens
    if budget < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens}: the model has only {positions} positions; lower it")
    prompt = build_prompt(model.tokenizer, question, hits, budget)
    device = default_device()
    model.body.to(device)
    tok = model.tokenizer
    engine = Engine(model.body, tok, stop_token_ids=[tok.eos_token_id] if tok.eos_token_id is not None else [])
    # A small model's greedy answer tends to loop until the token limit: stop it there.
    params = SamplingParams(max_new_tokens=max_new_tokens, stop_loops=True)
    text = engine.complete([Request(prompt.ids, params)])[0].text.strip()
    return {"question": question, "answer": text, "answered": True, "model": model.name,
            "sources": [{"n": n, **h.to_dict()} for n, h in enumerate(prompt.used, start=1)],
            "sources_dropped": len(hits) - len(prompt.used), "prompt_tokens": len(prompt.ids)}


def min_score_for(model: str, asked: float | None) -> float | None:
    """The threshold `ask` applies: the one asked for, else the calibrated one for the store's model."""
    return asked if asked is not None else CALIBRATED_MIN_SCORE.get(model)


def refusal(question: str, best: float, threshold: float, hits: list) -> dict:
    """What `ask` says when the best chunk is below the threshold: no generation at all."""
    return {"question": question, "answer": NO_SOURCE, "answered": False, "best_score": best,
            "min_score": threshold, "model": None, "sources": [], "sources_dropped": 0, "prompt_tokens": 0,
            "nearest": [{"n": n, **h.to_dict()} for n, h in enumerate(hits[:3], start=1)]}


def cite(text: str, sources: list, analyzer) -> tuple[str, list[int]]:
    """The answer with a `[n]` after each sentence that cites nothing but takes most of its terms
    from source n (small models rarely cite as asked); and the numbers added."""
    import re

    terms = [set(analyzer.terms(s["text"])) for s in sources]
    added: list[int] = []
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        words = set(analyzer.terms(sentence))
        if not words or re.search(r"\[\d+\]", sentence) or not terms:
            out.append(sentence)
            continue
        share, n = max((len(words & t) / len(words), n) for n, t in enumerate(terms, start=1))
        if share >= CITE_OVERLAP:
            sentence = re.sub(r"([.!?]?)$", lambda m: f" [{n}]{m.group(1)}", sentence, count=1)
            added.append(n)
        out.append(sentence)
    return " ".join(out), added
