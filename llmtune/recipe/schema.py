"""The recipe schema: the only place defaults live.

Each field's docstring is its documentation: it feeds `llmtune schema`, the generated
reference in docs/recipe-reference.md and editor completion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from llmtune.recipe.eval_section import EvalSection
from llmtune.recipe.section import DataSource, Section

if TYPE_CHECKING:
    from llmtune.methods.base import MethodConfig


class ModelSection(Section):
    name: str
    """A built-in name (`minilm`, `smollm2-135m`, `tiny-llama`, `tiny-gpt2`, `tiny-bert`), a
    local folder, a local `.gguf` file (dequantized once into a cached folder), or a model hub
    id (needs network unless cached)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Only set this for models you trust."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype. `auto` (or `float32`): every weight in float32 whatever dtype the
    checkpoint was saved in, trained under bf16 autocast where the hardware has it
    (`train.precision: auto`): "fp32 master + bf16 autocast". `bfloat16`/`float16`: every
    weight, trainable ones included, in that dtype ("pure bf16"; AdamW steps bf16 weights).
    manifest.json records the policy under `precision`."""
    pooling: Literal["mean", "cls", "last", "max"] = "mean"
    """How a classification head reads the sequence: mean over real tokens (right for
    sentence-embedding encoders like MiniLM), the first token, the last real token (decoder
    models), or the element-wise max."""
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout before the classification head."""
    head_init: Literal["random", "label_words"] = "random"
    """How a classification head starts. `random`: a new linear layer. `label_words` (causal
    LMs): each label's row is the output embedding of its word (`eval.verbalizers`' word for
    it, else the label name, after a space; its first token), so with `pooling: last` the
    untrained classifier scores as prompting with those words would, and training starts
    from there instead of from chance. Pair it with `data.text_template` ending where the
    word would come (e.g. `Review: {text}\nSentiment:`)."""


SourceField = Annotated[DataSource, Field()]


class Columns(Section):
    text: str = "text"
    """Column with the input text (classification, causal_lm)."""
    text_pair: str | None = None
    """Optional second text column for sentence-pair classification."""
    label: str = "label"
    """Column with the label, as a name or an integer id (classification)."""
    instruction: str = "instruction"
    """Alpaca-style instruction column (sft)."""
    input: str = "input"
    """Alpaca-style optional input column (sft)."""
    output: str = "output"
    """Alpaca-style response column (sft)."""
    messages: str = "messages"
    """Chat column: a list of {role, content} (sft with `format: chat`)."""
    prompt: str = "prompt"
    """Prompt column (preference and RL data)."""
    chosen: str = "chosen"
    """Preferred response column (preference data)."""
    rejected: str = "rejected"
    """Dispreferred response column (preference data)."""
    completion: str = "completion"
    """Completion column (unpaired preference data, KTO)."""
    desirable: str = "label"
    """Boolean column saying whether a completion is desirable (KTO)."""
    query: str = "query"
    """Query column of retrieval training pairs."""
    positive: str = "positive"
    """Column with a text that answers the query (retrieval pairs)."""
    negative: str = "negative"
    """Optional column with a text that does not answer the query (retrieval pairs): a
    hard negative beside the batch's other positives. Absent or empty: none for that row."""


class RetrievalData(Section):
    """What a retrieval recipe is evaluated on: the eval queries are `data.eval` (an id and a
    text per row), ranked against `documents` and scored with `qrels`."""

    documents: str
    """The collection: a .jsonl/.csv/.tsv/.parquet file with one document per row, its id in
    `id_column` and its text in `data.columns.text`. Relative to the recipe."""
    qrels: str
    """Relevance judgments: a .jsonl/.csv/.tsv/.parquet file with `query_id`, `doc_id` and
    `relevance` columns. Relevance > 0 is relevant (and the gain nDCG uses); 0 is judged not
    relevant. Rows of queries that are not in `data.eval` are ignored, so one judgments file
    can serve several query splits; a row naming a document that is not in the collection is
    an error."""
    id_column: str = "id"
    """Column holding each query's (data.eval) and each document's id."""
    chunk_tokens: int = Field(128, gt=0)
    """Documents are cut into windows of this many of the encoder's tokens, as `llmtune index`
    does (its default too), and a document ranks by its best window."""
    overlap: int = Field(32, ge=0)
    """Tokens shared by consecutive windows at most (as `llmtune index --overlap`)."""


class DataSection(Section):
    task: Literal["classification", "causal_lm", "sft", "preference", "unpaired_preference", "prompts",
                  "retrieval"]
    """What the rows are for: classification (text[, text_pair] -> label), causal_lm (raw
    text), sft (instruction -> response, loss on the response only), preference
    (prompt/chosen/rejected), unpaired_preference (completion + desirable flag), prompts
    (prompts only, for online RL), retrieval (query/positive[/negative] pairs that train a
    sentence encoder; evaluated by ranking `retrieval.documents` for the `data.eval` queries)."""
    train: SourceField
    """Training rows: a path (string) or a source mapping."""
    eval: SourceField | None = None
    """Evaluation rows. If absent, `eval_fraction` of the training rows are held out.
    Retrieval: the eval queries (`retrieval.id_column` and `columns.text`), with `retrieval`."""
    retrieval: RetrievalData | None = None
    """data.task retrieval: the collection and judgments the `eval` queries are scored with
    (nDCG@10, MAP@10, recall@10/100, MRR at document level). Without it (and `eval`) a
    retrieval run trains and is not evaluated."""
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of training rows held out for evaluation when `eval` is not given."""
    split_seed: int = 0
    """Seed of the held-out split."""
    columns: Columns = Columns()
    """Map the task's fields to your file's column names."""
    labels: list[str] | None = None
    """Label names in id order. Default: sorted distinct labels of the training rows."""
    text_template: str | None = None
    """classification: the text each input is put in before tokenizing, `{text}` standing
    for the row's text (and `{text_pair}` for its pair), e.g. `Review: {text}\nSentiment:`:
    a causal LM reads a sentence framed as a question it can answer. Training, `llmtune
    eval` and `llmtune serve` frame inputs the same way; llmtune.json records it."""
    format: Literal["auto", "alpaca", "chat"] = "auto"
    """sft rows: alpaca fields or chat messages; `auto` looks at the columns."""
    prompt_template: str = (
        "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
    )
    """Prompt for alpaca rows with `prompt_style: plain`. `{instruction}`, `{input}` and
    `{input_block}` (the input under an `### Input:` header, or nothing when the input is
    empty) are filled in. Giving it in a recipe without `prompt_style` implies `plain`."""
    prompt_style: Literal["auto", "chat", "plain"] = "auto"
    """How alpaca rows become a prompt. `chat`: through the model's chat template, the
    instruction (and input, after a blank line) as the user turn and the output as the
    assistant turn, with the loss on the assistant turn only. `plain`: the
    `prompt_template` text followed by the output and end-of-sequence. `auto`: `chat` when
    the model's tokenizer has a chat template, else `plain`. Training, `llmtune eval` and
    `llmtune preview` render prompts the same way; the choice is logged and recorded in the
    manifest's data summary. For text prompts of online RL (`prompts`): `chat` makes each a
    user turn of the chat template, `plain` fills `prompt_template`'s instruction with it,
    `auto` renders them as the parent run did when `model.name` is a run directory (its chat
    template or its plain template) and leaves them as they are otherwise."""
    max_length: int = Field(256, gt=0)
    """Tokens per example; longer examples are truncated (and counted in the log)."""
    truncation_side: Literal["right", "left"] = "right"
    """Which end of a too-long example is cut."""
    empty_rows: Literal["error", "drop"] = "error"
    """What to do with rows whose text is empty: stop with the row number, or drop them
    (the count is reported)."""

    @field_validator("prompt_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        import string

        allowed = {"instruction", "input", "input_block"}
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:  # a lone `{` or `}`
            raise ValueError(f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
        unknown = sorted(f for f in fields if f.split(".")[0].split("[")[0] not in allowed)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join('{' + f + '}' for f in unknown)}; "
                             f"use {{instruction}}, {{input}} or {{input_block}}")
        return value

    @field_validator("text_template")
    @classmethod
    def _text_fields(cls, value: str | None) -> str | None:
        import string

        if value is None:
            return value
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:  # a lone `{` or `}`
            raise ValueError(f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
        if "text" not in fields or fields - {"text", "text_pair"}:
            raise ValueError("use {text} (and optionally {text_pair}), and no other field")
        return value

    @model_validator(mode="after")
    def _template_keeps_the_pair(self):
        if self.text_template is not None and self.columns.text_pair and "{text_pair}" not in self.text_template:
            raise ValueError(f"data.text_template has no {{text_pair}}, so column {self.columns.text_pair!r} "
                             f"(columns.text_pair) would be dropped; put {{text_pair}} in the template")
        return self

    @model_validator(mode="after")
    def _retrieval_sections(self):
        if self.retrieval is not None and self.task != "retrieval":
            raise ValueError(f"data.retrieval applies to data.task retrieval (this recipe's task is "
                             f"{self.task!r}); remove it")
        if self.task == "retrieval" and (self.retrieval is None) != (self.eval is None):
            raise ValueError("a retrieval recipe is evaluated with both data.eval (the queries) and "
                             "data.retrieval (documents and qrels); give both, or neither to train only")
        return self

    @model_validator(mode="before")
    @classmethod
    def _string_sources(cls, data):
        if isinstance(data, dict):
            data = dict(data)
            if "prompt_template" in data and "prompt_style" not in data:
                data["prompt_style"] = "plain"  # a template written out is meant to be used
            for key in ("train", "eval"):
                if isinstance(data.get(key), str):
                    data[key] = {"path": data[key]}
        return data


MAX_EPOCHS = 10_000
"""More passes than this is a mistake (`1e300` would plan a step count of 300 digits), not a plan."""
MAX_STEPS = 10**9
"""A billion optimizer steps is beyond any run this tool makes; a larger count is a typo."""


class TrainSection(Section):
    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS)
    """Passes over the training rows (fractions allowed)."""
    max_steps: int | None = Field(None, gt=0, le=MAX_STEPS)
    """Stop after this many optimizer steps (overrides `epochs`)."""
    batch_size: int = Field(16, gt=0)
    """Examples per forward pass, per process."""
    grad_accum: int = Field(1, gt=0)
    """Forward passes per optimizer step."""
    lr: float = Field(2e-5, gt=0)
    """Peak learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (not applied to biases and norms)."""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Fraction of steps spent warming up linearly from 0."""
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate decay after warmup."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the gradient norm to this value; null disables clipping."""
    seed: int = 0
    """Seed for weights init, data order and dropout."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """`auto`: bf16 on a GPU that has it, else fp32."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, same data per epoch)."""
    log_every: int = Field(10, gt=0)
    """Log loss, lr and tokens/s every N optimizer steps."""
    eval_every: int | None = Field(None, gt=0)
    """Evaluate every N optimizer steps (and always at the end)."""
    save_every: int | None = Field(None, gt=0)
    """Write a resumable checkpoint every N optimizer steps."""
    keep_checkpoints: int = Field(2, gt=0)
    """How many recent checkpoints to keep."""
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    """NaN/inf loss: stop (keeping the last good checkpoint) or skip that step."""
    max_skipped_steps: int = Field(10, ge=0)
    """With `skip`, stop anyway after this many skipped steps."""
    packing: bool = False
    """causal_lm/sft: pack several examples into each row of up to `data.max_length`
    tokens. Position ids restart at every example and attention stays inside it (the
    attention implementation's document mask), so the loss is the unpacked one; only the
    padding goes."""
    chunked_loss: bool = True
    """causal_lm/sft: compute the cross-entropy in chunks over the positions that carry a
    label only, never holding full-vocabulary float32 logits for the whole batch. Same loss
    as the plain path; less memory, and no work on prompt and padding positions."""
    compile: bool = False
    """torch.compile each transformer block (not the whole model): fused kernels on a GPU.
    The first steps are slow while it compiles."""
    fast_dropout: bool = True
    """On a CPU, draw dropout masks in bulk (16 random bits per element, from a generator
    seeded by torch's, so resuming replays them) instead of with torch's per-element
    Bernoulli draw: the same keep probability (to within 2**-17), other masks than torch's;
    no effect on a GPU. What it measured: docs/performance.md. `false` gives torch's own masks."""
    fused_forward: bool = True
    """Use the method's fused forward for the layers it adds, where it has one: LoRA layers
    add their update inside one GEMM (`addmm` with the scale as its alpha) instead of scaling
    the full update and adding it in two more passes. The same function of the same weights
    and dropout masks; any layer it does not cover (DoRA, several adapters, a merged
    adapter) runs peft's own forward. What it measured: docs/performance.md."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: much less memory for about
    a third more compute."""
    nonfinite_check: Literal["auto", "every_step", "log_steps"] = "auto"
    """When a NaN/inf loss or gradient is looked for on the host. `every_step`: after each
    optimizer step (one host sync per step; a bad step is redone with the next batch).
    `log_steps`: only at log, eval and checkpoint steps, so the GPU never waits between
    them; a bad step is still never applied (the fused optimizer skips it on the device),
    but it counts as a step. `auto`: `log_steps` on a GPU, `every_step` elsewhere."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = []
    """Experiment trackers to send the run to, any of `tensorboard`, `wandb`, `mlflow`,
    `trackio` (through accelerate's trackers). Each receives every record metrics.jsonl gets
    and the resolved recipe as hyperparameters; only the main process logs. TensorBoard
    writes event files to RUN_DIR/tracking/; the others follow their own settings
    (WANDB_MODE, WANDB_PROJECT, MLFLOW_TRACKING_URI, ...). Each needs its package installed
    (`pip install tensorboard`, ...); a missing one stops the run before training."""

    @field_validator("report_to")
    @classmethod
    def _distinct_trackers(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class OutputSection(Section):
    dir: str | None = None
    """Run directory. Default: runs/<recipe file name without .yaml>."""


def method_union():
    from llmtune.methods.registry import all_methods

    configs = tuple(m.Config for m in all_methods().values())
    return Annotated[Union[configs], Field(discriminator="name")]


class RecipeBase(Section):
    """A validated recipe: its sections, and `method` (added by recipe/load.recipe_model as the
    options of the method the recipe names, a `MethodConfig`). What every stage receives."""

    model: ModelSection
    data: DataSection
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    output: OutputSection = OutputSection()
    if TYPE_CHECKING:  # the field itself is the named method's options (recipe/load.recipe_model)
        method: MethodConfig

    @model_validator(mode="after")
    def _packing_needs_sequences(self):
        if self.train.packing and self.data.task not in ("causal_lm", "sft"):
            raise ValueError(f"train.packing packs causal_lm/sft examples; data.task is {self.data.task!r} "
                             f"(set train.packing: false)")
        return self
