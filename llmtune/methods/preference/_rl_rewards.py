"""Where online RL's reward comes from: a reward run's model, or a user's function.

Both become one callable f(prompts, completions, **columns) -> list[float], used by the
trainer and by `llmtune eval`, so the two always score completions the same way."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import torch

from llmtune.device import default_device
from llmtune.errors import UserError


# -- where ------------------------------------------------------------------------------------
def find_reward_run(spec: str) -> Path:
    """The reward run directory (an absolute path: the recipe loader resolved it)."""
    path = Path(spec)
    if (path / "final").is_dir():
        return path
    raise UserError(f"method.reward_model {spec!r}: no finished run there (no final/ in it); train one with a "
                    f"`method: reward` recipe first")


def resolve_reward(config) -> dict:
    """The reward as manifest.json records it (absolute paths, so `llmtune eval RUN_DIR`
    finds it again from anywhere)."""
    if config.reward_model is not None:
        return {"model": str(find_reward_run(config.reward_model))}
    return {"function": config.reward_function, "kwargs": dict(config.reward_kwargs)}


def recorded_reward(final: Path | None) -> dict | None:
    """The reward a finished run recorded in its manifest (None for a base model)."""
    if final is None:
        return None
    try:
        return json.loads((final.parent / "manifest.json").read_text()).get("reward")
    except (OSError, json.JSONDecodeError):
        return None


# -- reward function --------------------------------------------------------------------------
def import_function(spec: str):
    module_name, _, func_name = spec.rpartition(":")
    where = f"method.reward_function {spec!r}"
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"{where}: no such file {path}")
            loader_spec = importlib.util.spec_from_file_location(f"llmtune_reward_{path.stem}", path)
            if loader_spec is None or loader_spec.loader is None:
                raise UserError(f"{where}: {path} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as exc:  # the user's module may fail in any way while importing
        raise UserError(f"{where}: could not import {module_name!r} ({type(exc).__name__}: {exc}); check the "
                        f"module name and that it imports on its own") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise UserError(f"{where}: {module_name!r} has no function {func_name!r} (it has: {', '.join(found[:12])})")
    return fn


def function_reward(fn, kwargs: dict, name: str):
    """Wrap a user's reward: add the recipe's reward_kwargs, check what it returns."""

    def reward(prompts=None, completions=None, **columns):
        scores = fn(completions=completions, prompts=prompts, **columns, **kwargs)
        try:
            scores = [None if s is None else float(s) for s in scores]
        except (TypeError, ValueError):
            raise UserError(f"method.reward_function {name!r} returned {type(scores).__name__}: {scores!r:.200}; "
                            f"it must return one number per completion") from None
        if len(scores) != len(completions):
            raise UserError(f"method.reward_function {name!r} returned {len(scores)} rewards for "
                            f"{len(completions)} completions; return one per completion")
        return scores

    reward.__name__ = name.rpartition(":")[2]
    return reward


# -- reward model -----------------------------------------------------------------------------
class RewardModelScorer:
    """Scores prompt + completion with a reward run's model, formatted as the reward
    trainer formatted its pairs (text + EOS, or the chat template)."""

    __name__ = "reward_model"

    def __init__(self, model, tok, max_length: int, batch_size: int):
        self.model, self.tok = model.eval(), tok
        self.max_length, self.batch_size = max_length, batch_size
        self.device = default_device()
        self.model.to(self.device)

    def _ids(self, prompt, completion) -> list[int]:
        if isinstance(prompt, list):
            return self.tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        eos = self.tok.eos_token or ""
        text = prompt + completion
        return self.tok(text if text.endswith(eos) else text + eos)["input_ids"]

    @torch.inference_mode()
    def __call__(self, prompts=None, completions=None, **columns) -> list[float]:
        ids = [self._ids(p, c)[-self.max_length:] for p, c in zip(prompts, completions)]
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        scores: list[float] = []
        for i in range(0, len(ids), self.batch_size):
            chunk = ids[i: i + self.batch_size]
            width = max(len(x) for x in chunk)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in chunk], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk], device=self.device)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores


def load_reward_run(run: Path):
    """(model, tokenizer, max_length) of a finished `method: reward` run, from what its
    final/llmtune.json records (the base model it was trained on, and its max_length)."""
    from llmtune.methods.preference._models import ModelRef, load_trained_reward
    from llmtune.models.load import load_tokenizer

    info_file = run / "final" / "llmtune.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    if info.get("model_kind") != "reward":
        raise UserError(f"method.reward_model {run}: this run trained method {info.get('method')!r}, not a reward "
                        f"model; point it at a `method: reward` run")
    tok = load_tokenizer(str(run / "final"))
    base = ModelRef.from_info(info)
    return load_trained_reward(base, tok, run / "final"), tok, info["max_length"]


def build_reward(config, recipe, recorded: dict | None = None):
    """The reward callable for `config` (or as a finished run `recorded` it)."""
    where = recorded or resolve_reward(config)
    if "model" in where:
        model, tok, max_length = load_reward_run(Path(where["model"]))
        return RewardModelScorer(model, tok, max_length, recipe.eval.batch_size)
    fn = import_function(where["function"])
    return function_reward(fn, where.get("kwargs", {}), where["function"])


# -- prompts ----------------------------------------------------------------------------------
def fit_prompts(rows: list[dict], tok, budget: int) -> list[dict]:
    """Cut text prompts to their last `budget` tokens (the end, next to where the answer
    starts, matters most); chat prompts lose their oldest turns until they fit."""
    out = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            if len(ids) > budget:
                prompt = tok.decode(ids[-budget:])
        else:
            while len(prompt) > 1 and len(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                                  return_dict=True)["input_ids"]) > budget:
                prompt = prompt[1:]
        out.append({**row, "prompt": prompt})
    return out
