"""Prompt templates: how one row becomes the query part of a prompt.

Templates are Jinja, rendered in a sandboxed environment because recipes may come from
other people: a template can read the row's fields but cannot reach Python internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmtune.data.encode import render_alpaca_prompt
from llmtune.errors import UserError

DEFAULT_CLASSIFICATION = "Text: {{ text }}\nLabel:"
DEFAULT_PAIR_CLASSIFICATION = "Text: {{ text }}\nSecond text: {{ text_pair }}\nLabel:"


def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # StrictUndefined: a misspelt field is an error naming the row, never an empty string.
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass
class QueryTemplate:
    """One way of writing a row as a query. `index` is its place in `eval.templates`."""

    source: str
    index: int | None = None
    _compiled: Any = None
    _alpaca: str | None = None
    """Set for the built-in sft default: data.prompt_template, a Python format string."""

    @property
    def label(self) -> str:
        if self.index is None:
            return "default"
        return f"eval.templates[{self.index}]"

    def render(self, fields: dict[str, Any], where: str) -> str:
        if self._alpaca is not None:
            return render_alpaca_prompt(self._alpaca, fields.get("instruction", ""), fields.get("input", ""))
        from jinja2 import TemplateError, UndefinedError
        from jinja2.sandbox import SecurityError

        try:
            return self._compiled.render(**fields)
        except UndefinedError as exc:
            raise UserError(f"{self.label}: {exc.message} for {where} (fields: {', '.join(sorted(fields))}); "
                            f"the answer column is withheld from templates") from None
        except SecurityError as exc:
            raise UserError(f"{self.label}: the template tried something the sandbox forbids ({exc})") from None
        except TemplateError as exc:
            raise UserError(f"{self.label}: could not render for {where}: {exc}") from None


def compile_templates(sources: list[str]) -> list[QueryTemplate]:
    env = _environment()
    return [QueryTemplate(src, i, env.from_string(src)) for i, src in enumerate(sources)]


def default_template(data_cfg) -> QueryTemplate:
    if data_cfg.task == "classification":
        src = DEFAULT_PAIR_CLASSIFICATION if data_cfg.columns.text_pair else DEFAULT_CLASSIFICATION
        return QueryTemplate(src, None, _environment().from_string(src))
    return QueryTemplate(data_cfg.prompt_template, None, _alpaca=data_cfg.prompt_template)


def query_fields(row_data: dict[str, Any], data_cfg) -> dict[str, Any]:
    """What a template sees: the row's own columns plus the task's canonical names
    (`text`, `instruction`, ...) as mapped by data.columns. The answer column is left out,
    so no template can leak the label or the reference response into its own query."""
    c = data_cfg.columns
    if data_cfg.task == "classification":
        answer = c.label
        canonical = {"text": c.text, "text_pair": c.text_pair}
    else:
        answer = c.output
        canonical = {"instruction": c.instruction, "input": c.input}
    fields = {k: v for k, v in row_data.items() if k != answer}
    for name, col in canonical.items():
        if col is not None and col in row_data:
            value = row_data[col]
            fields[name] = "" if value is None else (value if isinstance(value, str) else str(value))
    if data_cfg.task != "classification":
        fields.setdefault("input", "")
    return fields
