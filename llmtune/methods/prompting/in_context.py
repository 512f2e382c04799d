"""In-context learning as a method: nothing trains; the run's final evaluation prompts the
base causal LM (zero- or few-shot demonstrations, templates and verbalisers, all set in the
recipe's `eval` section) and records what it scored, as every run does. So a prompted
recipe names what it does (`method: {name: in-context}`), and `llmtune train` and
`llmtune compare --recipes` run it through the same session as any trained recipe."""

from __future__ import annotations

from typing import Any, Literal

from llmtune.methods.base import Method, MethodConfig, freeze
from llmtune.methods.registry import register_method


class InContextConfig(MethodConfig):
    name: Literal["in-context"]


@register_method
class InContext(Method):
    name = "in-context"
    Config = InContextConfig
    config: InContextConfig
    summary = "nothing trains: a causal LM answers from prompts (eval.shots, eval.templates, eval.verbalizers)"
    tasks = frozenset({"classification", "sft"})
    trains_itself = True
    trains = False

    def result_kind(self, task: str) -> str:
        return "causal_lm"  # the base causal LM answers, whatever the task

    def apply(self, body: Any, *, causal: bool) -> Any:
        freeze(body)
        return body

    def fit(self, job):
        from llmtune.methods.prompting._in_context_run import prompt_in_context

        return prompt_in_context(job)
