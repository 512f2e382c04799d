"""What the recipe's sections share (recipe/schema.py, recipe/eval_section.py): the base class, and
the data source that both `data:` and `eval.demos` name."""

from __future__ import annotations

from pydantic import Field, model_validator

from llmtune.strict_model import StrictModel


class Section(StrictModel):
    """A recipe section: unknown keys, NaN/inf and booleans for numbers are errors."""


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
