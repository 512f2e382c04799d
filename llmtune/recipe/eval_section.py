"""The recipe's `eval:` section and its generation options (part of the schema, recipe/schema.py;
the same rule holds: each field's docstring is its documentation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from llmtune.recipe.section import DataSource, Section
from llmtune.recipe.template_check import check_template


class GenerationOptions(Section):
    max_new_tokens: int = Field(64, gt=0)
    """Tokens generated per prompt at most; generation stops earlier at end-of-sequence."""
    strategy: Literal["greedy", "sample"] = "greedy"
    """`greedy` takes the most likely token each step (deterministic); `sample` draws from
    the distribution shaped by `temperature` and `top_p`."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (only with `strategy: sample`); below 1 sharpens, above 1 flattens."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: draw only from the smallest set of tokens whose probability adds up
    to `top_p` (only with `strategy: sample`)."""
    seed: int = 0
    """Seed of sampling, so a sampled evaluation can be repeated."""
    stop: list[str] = []
    """Cut each generated answer at the first of these strings (e.g. `"\n\n"` or `"###"`
    so that a few-shot model does not run on into a demonstration of its own)."""


class EvalSection(Section):
    batch_size: int = Field(64, gt=0)
    """Examples per evaluation forward pass (prompts per generation batch; label
    continuations per scoring batch)."""
    limit: int | None = Field(None, gt=0)
    """Evaluate on the first N rows only."""
    generate: bool = True
    """sft data: besides loss and perplexity, generate a response to each eval row and score
    exact match and token-level F1 against the reference response. Preference policies (dpo,
    kto, orpo): besides the per-pair scores, answer each held-out prompt and report the share
    of answers closer to the chosen response than to the rejected one."""
    generation: GenerationOptions = GenerationOptions()
    """How responses are generated (sft data, preference policies)."""
    shots: int | None = Field(None, ge=0)
    """In-context learning: put this many demonstrations (solved examples from `demos`) in
    front of each eval query. `0` is zero-shot prompting. Unset: no prompting, score the
    model as trained (classification head, or plain sft prompts). Any of `shots`,
    `templates` or `verbalizers` turns prompting on; classification is then scored by a
    causal LM from the log-likelihood of each label's verbaliser."""
    demos: DataSource | None = None
    """Demonstration pool (a path or a source mapping, like `data.train`). Default: the
    training split (without the rows held out by `data.eval_fraction`). Rows whose text
    equals the query's are never its demonstrations."""
    selection: Literal["random", "nearest", "store"] = "random"
    """How demonstrations are picked for each query: `random` (seeded by `seed`),
    `nearest`: the pool rows whose embedding is closest (cosine) to the query's, embedded
    by `encoder`; the nearest sits right before the query; or `store`: the nearest chunks
    of the `eval.store` index (built by `llmtune index` from the pool's file), matched back
    to pool rows by their text."""
    store: str | None = None
    """`selection: store`: the store to search, as `llmtune index --store` names it (a
    `.db` path, relative to the recipe's folder, or a Milvus server URI). A retrieval recipe:
    rank the queries through this store (built by `llmtune index` from
    `data.retrieval.documents` with `--id-column`, and with this run's encoder) instead of by
    exact search in memory; `llmtune eval` only (a run's own final evaluation is in memory)."""
    search: Literal["dense", "bm25", "hybrid"] = "dense"
    """A retrieval recipe: how the queries are searched. `dense`: the encoder's vectors (exact
    search in memory, or the store's dense index with `eval.store`); `bm25` and `hybrid`
    (as `llmtune query --mode`) need `eval.store`."""
    seed: int = 0
    """Seed of `random` demonstration selection (and of the template selection split)."""
    demo_sets: int | None = Field(None, gt=0)
    """`random` selection only: draw this many demonstration sets and give the i-th query the
    set drawn for position i mod `demo_sets` (the same draw the i-th query gets without this
    key). Queries with the same set share their prompt's start, which is encoded once (see
    `share_prefix`): far faster few-shot scoring, with the score an average over
    `demo_sets` sets. Unset: a fresh draw for every query."""
    share_prefix: bool = True
    """Label scoring: encode a prompt start shared by several prompts (the same
    demonstrations in the same order) once and reuse its key/value cache. Same scores up to
    float rounding; `false` encodes every prompt whole (to compare speed)."""
    encoder: str = "minilm"
    """Model that embeds texts for `selection: nearest` (mean-pooled hidden states): a
    built-in name, a local folder, a hub id, or a retrieval run (method contrastive)."""
    encoder_max_length: int = Field(128, gt=0)
    """Tokens per text when embedding for `selection: nearest`; longer texts are cut."""
    max_length: int | None = Field(None, gt=0)
    """Token budget of a prompt (demonstrations + query, plus the label word when scoring).
    Prompts over it drop demonstrations (the farthest, or the last drawn, first) and the
    output counts them. Default: `data.max_length`, capped by the model's maximum positions
    (minus `generation.max_new_tokens` when generating)."""
    demo_separator: str = "\n\n"
    """Text between consecutive demonstrations, and between the last one and the query."""
    answer_separator: str | None = None
    """Text between a rendered query and its answer (label word or response), in
    demonstrations and when scoring. Default: a space for classification, nothing for sft
    (the alpaca prompt already ends with a newline)."""
    verbalizers: dict[str, str] | None = None
    """Label name -> the word a causal LM should say for it (e.g. `{0: terrible, 1: great}`).
    Each label is scored by the log-likelihood of its word after the prompt; the most
    likely one is the prediction. Default: the label names themselves."""
    label_score: Literal["sum", "mean"] = "sum"
    """How a multi-token verbaliser's token log-probabilities combine: `sum` (the
    sequence's log-likelihood) or `mean` (per token, favours no length)."""
    templates: list[Annotated[str, AfterValidator(check_template)]] | None = Field(None, min_length=1)
    """Jinja templates for the query part of a prompt, rendered with the row's fields (your
    column names, plus `text`/`text_pair` or `instruction`/`input` as mapped by
    `data.columns`; the answer column is withheld). Rendered in a sandbox. With several,
    each is scored on the eval rows and the table is sorted by the headline metric
    (accuracy, or token F1 for sft); eval.json records all scores and the best template.
    Default: `Text: {{ text }}\nLabel:` for classification, `data.prompt_template` for sft."""
    template_select_fraction: float = Field(0.5, ge=0.0, lt=1.0)
    """With several `templates`: the share of eval rows (drawn by `seed`) on which the best
    template is chosen; its reported score comes from the other rows, so choosing does not
    flatter it. `0`: choose and report on the same rows (the output says the best score is
    then optimistic)."""

    @model_validator(mode="before")
    @classmethod
    def _string_demos(cls, data):
        if isinstance(data, dict) and isinstance(data.get("demos"), str):
            data = {**data, "demos": {"path": data["demos"]}}
        return data

    @field_validator("verbalizers", mode="before")
    @classmethod
    def _label_keys(cls, value):
        if not isinstance(value, dict):
            return value
        for label, word in value.items():
            if isinstance(word, bool):
                # YAML 1.1 reads yes/no/on/off as booleans: a silent True would be scored.
                raise ValueError(f"label {label!r} maps to the boolean {word}; YAML reads yes/no/on/off as "
                                 f"true/false, so quote the word, e.g. 'yes'")
        # Label ids written as integers (`0: terrible`) name the same labels as strings.
        return {str(k): (str(v) if isinstance(v, (int, float)) else v) for k, v in value.items()}

    @model_validator(mode="after")
    def _search_needs_store(self):
        if self.search != "dense" and not self.store:
            raise ValueError(f"eval.search {self.search!r} searches a store's text: set eval.store to the store "
                             f"`llmtune index` built from data.retrieval.documents")
        return self

    @model_validator(mode="after")
    def _store_selection(self):
        if self.selection == "store" and not self.store:
            raise ValueError("eval.selection 'store' needs eval.store: the store `llmtune index` built from the "
                             "demonstration file")
        return self

    @model_validator(mode="after")
    def _verbalizers_words(self):
        if self.verbalizers is not None:
            empty = [label for label, word in self.verbalizers.items() if not word.strip()]
            if empty:
                raise ValueError(f"eval.verbalizers: empty word for label(s) {', '.join(empty)}")
        return self

    @model_validator(mode="after")
    def _demo_sets_need_random(self):
        if self.demo_sets is not None and self.selection != "random":
            raise ValueError("eval.demo_sets applies to `selection: random` (nearest demonstrations are "
                             "each query's own); remove it or use random selection")
        return self

    @property
    def prompting(self) -> bool:
        """Whether eval builds prompts (zero/few-shot, templates or verbalisers)."""
        return self.shots is not None or self.templates is not None or self.verbalizers is not None
