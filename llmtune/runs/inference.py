"""The one way to open something for inference (`llmtune chat`, `generate`, `serve`): a run
directory of any method, a folder `llmtune export` wrote, a recipe (its base model) or a model
name (built-in, local folder, .gguf file, hub id).

`identify(arg)` says what the argument holds before any weights load (a causal LM, a
classification model, a reward model, an encoder), so a verb can refuse with the verb that
fits; `open_causal_lm(arg, verb=)` loads a causal LM into a generation Engine, with the
prompt format the model trained with, its context length and its stop tokens. Runs open
through runs/open.py, like eval, export and embed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmtune.errors import UserError
from llmtune.generation.prompts import CHAT, PLAIN, TEXT, PromptFormat
from llmtune.models.task_model import INFO_FILE
from llmtune.runs.open import CAUSAL_LM, CLASSIFICATION, ENCODER, REWARD, Target, holds, open_run, open_target

if TYPE_CHECKING:
    from llmtune.generation.engine import Engine

_ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta",
                            "deberta-v2", "mpnet", "camembert", "modernbert"})
FITTING_VERB = {
    CLASSIFICATION: "`llmtune eval` scores it, and `llmtune serve` answers classification requests with it",
    REWARD: "`llmtune eval` scores it; an rl recipe uses it as the reward (method.reward)",
    ENCODER: "`llmtune embed` computes its features, and `llmtune serve` answers /v1/embeddings with it",
}


@dataclass
class Source:
    """What an argument names, before any weights load."""

    arg: str
    kind: str
    target: Target | None = None
    """A run directory or a recipe file."""
    model: str | None = None
    """Otherwise the model to load: a built-in name, a folder (an export too), .gguf, hub id."""
    info: dict | None = None
    """llmtune.json of a run's final/ or of an export folder."""


@dataclass
class InferenceModel:
    name: str
    engine: "Engine"
    prompt_format: PromptFormat
    method: str | None = None
    """The run's method (None for a model name or a recipe's base)."""

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """A conversation rendered the way the model trained, ready to continue."""
        return self.prompt_format.render(self.engine.tokenizer, messages)

    def describe(self) -> str:
        what = f"{self.method} run" if self.method else "model"
        return (f"{self.name}: {what}, prompts through {self.prompt_format.describe()}, context "
                f"{self.context_length} tokens")


def identify(arg: str | Path) -> Source:
    """What `arg` holds. A run or export folder says so in its llmtune.json; a model's config
    says whether it is an encoder."""
    text, path = str(arg), Path(arg)
    if path.is_dir() and (path / "recipe.yaml").exists():
        target = open_run(path)
        return Source(text, target.holds, target=target, info=target.info)
    if path.is_dir() and (path / INFO_FILE).exists():
        info = json.loads((path / INFO_FILE).read_text())
        export = info.get("export") or {}
        if export.get("format") == "gguf" and export.get("file"):  # `export --format gguf`: its .gguf file
            return Source(text, holds(info), model=str(path / export["file"]), info=info)
        if not (path / "config.json").exists():
            raise UserError(_adapter_only(path, info))
        return Source(text, holds(info), model=text, info=info)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        target = open_target(path)
        m = target.recipe.model
        return Source(text, _model_kind(m.name, m.trust_remote_code, m.revision), target=target)
    return Source(text, _model_kind(text, False, None), model=text)


def refusal(source: Source, verb: str) -> UserError:
    article = "an" if source.kind[0] in "aeiou" else "a"
    return UserError(f"{source.arg}: holds {article} {source.kind}, not a causal LM, so `llmtune {verb}` cannot generate "
                     f"text with it; {FITTING_VERB.get(source.kind, 'pass a run or model that writes text')}")


def open_causal_lm(arg: str | Path, *, verb: str, reporter=None, trust_remote_code: bool = False) -> InferenceModel:
    """Load what `arg` names as a causal LM ready to generate; any other kind exits 2 naming
    what it holds and the verb that fits."""
    from llmtune.device import default_device
    from llmtune.generation.engine import Engine, model_positions

    source = identify(arg)
    if source.kind != CAUSAL_LM:
        raise refusal(source, verb)
    body, tok, fmt, method = _load(source, verb, reporter, trust_remote_code)
    body.to(default_device())
    # a soft prompt's virtual tokens sit in front of the input, in the model's positions
    taken = method.virtual_tokens if method is not None and method.virtual_tokens_at == "input" else 0
    positions = model_positions(body.config)
    engine = Engine(body, tok, context_length=positions - taken if positions else None)
    return InferenceModel(source.arg, engine, fmt, method.name if method is not None else None)


def _load(source: Source, verb: str, reporter, trust_remote_code: bool):
    """(body, tokenizer, prompt format, method or None)."""
    from llmtune.models.load import load_body, load_tokenizer

    t = source.target
    if t is not None and t.final is not None:
        tok = t.tokenizer()
        manifest = _manifest(t.run_dir)
        if reporter is not None:
            from llmtune.models.chat_template import warn_if_template_changed

            warn_if_template_changed(manifest or {}, tok, reporter, verb)
        body = t.trained_model().body
        if t.method.can_merge:  # one plain model: faster than an adapter on every call
            body = t.method.merge(body)
        return body, tok, prompt_format(t.recipe, manifest or {}, tok), t.method
    if t is not None:  # a recipe: its base model, prompted as the recipe would train it
        m = t.recipe.model
        tok = t.tokenizer()
        body = load_body(m.name, "causal_lm", trust_remote_code=m.trust_remote_code, revision=m.revision,
                         dtype=m.dtype)
        return body, tok, prompt_format(t.recipe, {}, tok), None
    tok = load_tokenizer(source.model, trust_remote_code)
    body = load_body(source.model, "causal_lm", trust_remote_code=trust_remote_code)
    return body, tok, _export_format(source.info, tok), None


def prompt_format(recipe, manifest: dict, tok) -> PromptFormat:
    """How the run (or a recipe's base model) is prompted: as training rendered its rows."""
    from llmtune.data.prompt_style import has_chat_template

    recorded = manifest.get("prompt_format")
    if isinstance(recorded, dict) and recorded.get("style") in (CHAT, PLAIN, TEXT):  # an RL run says what it rendered
        return PromptFormat(recorded["style"], recorded.get("template"))
    summary = manifest.get("data_summary") or {}
    data = recipe.data
    if not manifest and data.prompt_style == "auto":  # a recipe whose model.name is a run: as that run
        from llmtune.methods.parent_run import prompt_format as parent_format

        parent = parent_format(recipe.model.name)
        if parent is not None:
            return PromptFormat(*parent)
    if summary.get("prompt_style") == PLAIN or data.prompt_style == PLAIN:
        return PromptFormat(PLAIN, data.prompt_template)
    if data.task == "causal_lm" and data.prompt_style != CHAT:
        return PromptFormat(TEXT)
    if has_chat_template(tok):
        return PromptFormat(CHAT)
    return PromptFormat(PLAIN, data.prompt_template) if data.task == "sft" else PromptFormat(TEXT)


def _export_format(info: dict | None, tok) -> PromptFormat:
    """A model name or an export folder: the chat template when the tokenizer has one, unless
    the run the export came from trained with the plain prompt template."""
    from llmtune.data.prompt_style import has_chat_template

    run = Path(((info or {}).get("export") or {}).get("from_run") or "")
    if info and run.name and (run / "recipe.yaml").exists():
        return prompt_format(open_run(run).recipe, _manifest(run) or {}, tok)
    return PromptFormat(CHAT if has_chat_template(tok) else TEXT)


def _manifest(run_dir: Path | None) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return None


def _model_kind(name: str, trust_remote_code: bool, revision: str | None) -> str:
    from llmtune.models import builtin

    if name in ("minilm", "tiny-bert"):
        return ENCODER
    if builtin.is_builtin(name):
        return CAUSAL_LM
    from llmtune.models.load import model_config

    config = model_config(name, trust_remote_code, revision)
    return ENCODER if config.model_type in _ENCODER_TYPES else CAUSAL_LM


def _adapter_only(path: Path, info: dict) -> str:
    run = (info.get("export") or {}).get("from_run")
    where = f"open the run it came from ({run}) instead, or " if run else ""
    return (f"{path}: an adapter-only export (what the {info.get('method')} method trained, without the base model "
            f"{info.get('base_model')}); {where}export the run with --merge for a folder that loads on its own")

