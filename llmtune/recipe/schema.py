"""The recipe schema: the only place defaults live.

Each field's docstring is its documentation: it feeds `llmtune schema`, the generated
reference in docs/recipe-reference.md and editor completion.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ModelSection(Section):
    name: str
    """A built-in name (`minilm`, `tiny-llama`, `tiny-gpt2`, `tiny-bert`), a local folder,
    or a model hub id (needs network unless cached)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Only set this for models you trust."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype at load time. `auto` keeps float32 on CPU."""
    pooling: Literal["mean", "cls", "last", "max"] = "mean"
    """How a classification head reads the sequence: mean over real tokens (right for
    sentence-embedding encoders like MiniLM), the first token, the last real token (decoder
    models), or the element-wise max."""
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout before the classification head."""


class DataSource(Section):
    path: str | None = None
    """A local file (.json, .jsonl, .csv, .tsv, .parquet, .txt), relative to the recipe."""
    hub: str | None = None
    """A hub dataset name, e.g. `glue` (needs network unless cached)."""
    subset: str | None = None
    """The hub dataset's configuration, e.g. `sst2`."""
    split: str = "train"
    """The hub dataset's split."""
    limit: int | None = Field(None, gt=0)
    """Use only the first N rows."""

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` or `hub`")
        return self


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


class DataSection(Section):
    task: Literal["classification", "causal_lm", "sft", "preference", "unpaired_preference", "prompts"]
    """What the rows are for: classification (text[, text_pair] -> label), causal_lm (raw
    text), sft (instruction -> response, loss on the response only), preference
    (prompt/chosen/rejected), unpaired_preference (completion + desirable flag), prompts
    (prompts only, for online RL)."""
    train: SourceField
    """Training rows: a path (string) or a source mapping."""
    eval: SourceField | None = None
    """Evaluation rows. If absent, `eval_fraction` of the training rows are held out."""
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of training rows held out for evaluation when `eval` is not given."""
    split_seed: int = 0
    """Seed of the held-out split."""
    columns: Columns = Columns()
    """Map the task's fields to your file's column names."""
    labels: list[str] | None = None
    """Label names in id order. Default: sorted distinct labels of the training rows."""
    format: Literal["auto", "alpaca", "chat"] = "auto"
    """sft rows: alpaca fields or chat messages; `auto` looks at the columns."""
    prompt_template: str = (
        "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
    )
    """Prompt for alpaca rows. `{instruction}`, `{input}` and `{input_block}` (the input
    under an `### Input:` header, or nothing when the input is empty) are filled in."""
    max_length: int = Field(256, gt=0)
    """Tokens per example; longer examples are truncated (and counted in the log)."""
    truncation_side: Literal["right", "left"] = "right"
    """Which end of a too-long example is cut."""
    empty_rows: Literal["error", "drop"] = "error"
    """What to do with rows whose text is empty: stop with the row number, or drop them
    (the count is reported)."""

    @model_validator(mode="before")
    @classmethod
    def _string_sources(cls, data):
        if isinstance(data, dict):
            data = dict(data)
            for key in ("train", "eval"):
                if isinstance(data.get(key), str):
                    data[key] = {"path": data[key]}
        return data


class TrainSection(Section):
    epochs: float = Field(1.0, gt=0)
    """Passes over the training rows (fractions allowed)."""
    max_steps: int | None = Field(None, gt=0)
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


class EvalSection(Section):
    batch_size: int = Field(64, gt=0)
    """Examples per evaluation forward pass."""
    limit: int | None = Field(None, gt=0)
    """Evaluate on the first N rows only."""


class OutputSection(Section):
    dir: str | None = None
    """Run directory. Default: runs/<recipe file name without .yaml>."""


def method_union():
    from llmtune.methods.registry import all_methods

    configs = tuple(m.Config for m in all_methods().values())
    return Annotated[Union[configs], Field(discriminator="name")]  # type: ignore[valid-type]


class _RecipeBase(Section):
    model: ModelSection
    data: DataSection
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    output: OutputSection = OutputSection()


class Recipe(_RecipeBase):
    method: method_union()  # type: ignore[valid-type]
    """How the model is finetuned: `method.name` picks one of `llmtune methods`, the
    other keys are that method's options."""

