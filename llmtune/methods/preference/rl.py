"""Online RL: the policy samples completions for each prompt and is pushed towards the ones
a reward scores highest, with trl's GRPO or RLOO. The reward is a reward model trained by
an earlier `method: reward` run (the RLHF path), or a Python function (rule-based rewards).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmtune.errors import UserError
from llmtune.methods.base import MethodConfig
from llmtune.methods.preference.base import TrlMethod
from llmtune.methods.preference.setup import Setup
from llmtune.methods.preference.options import PeftSection
from llmtune.methods.registry import register_method

_FUNCTION_SPEC = re.compile(r"^(?:[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*|[^:]+\.py):[A-Za-z_]\w*$")


class RlConfig(MethodConfig):
    name: Literal["rl"]
    algorithm: Literal["grpo", "rloo"] = "grpo"
    """`grpo` (advantages relative to the mean of each prompt's group of completions) or
    `rloo` (REINFORCE leave-one-out: each completion's baseline is the others' mean)."""
    reward_model: str | None = None
    """Run directory of a `method: reward` run whose final/ scores completions (relative
    paths: the recipe's folder, then the current directory). Give this or `reward_function`."""
    reward_function: str | None = None
    """A Python reward `module:function` (importable, or a module beside the recipe) or
    `path/to/file.py:function`, called as f(completions, prompts=..., **columns) -> one
    float per completion. Built-in: `llmtune.methods.preference.rewards:char_fraction`,
    `...:contains`. Importing it runs that code."""
    reward_kwargs: dict[str, Any] = {}
    """Extra keyword arguments for `reward_function` (e.g. {char: e})."""
    num_generations: int = Field(4, ge=2)
    """Completions sampled per prompt; they are compared with each other, so
    train.batch_size x train.grad_accum must be a multiple of it."""
    max_completion_length: int = Field(64, gt=0)
    """Tokens sampled per completion at most. Prompts are cut (from the left) to
    data.max_length minus this."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the completions."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: draw from the smallest set of tokens whose probability sums to this."""
    beta: float = Field(0.0, ge=0)
    """Weight of the KL penalty towards the starting model; 0 needs no reference model."""
    epsilon: float = Field(0.2, gt=0)
    """Clipping range of the policy ratio (as in PPO)."""
    num_iterations: int = Field(1, ge=1)
    """Optimisation passes over each batch of sampled completions."""
    peft: PeftSection | None = None
    """LoRA options to train adapters only (the frozen base is then the reference); null
    trains every weight."""

    @model_validator(mode="after")
    def _one_reward(self):
        if (self.reward_model is None) == (self.reward_function is None):
            raise ValueError("give exactly one of `reward_model` (a reward run directory) or `reward_function` "
                             "(module:function)")
        if self.reward_function is not None and not _FUNCTION_SPEC.match(self.reward_function):
            raise ValueError(f"reward_function {self.reward_function!r} is not of the form module:function or "
                             f"path/to/file.py:function")
        if self.reward_kwargs and self.reward_function is None:
            raise ValueError("reward_kwargs are passed to reward_function; there is none")
        return self

    def resolve_paths(self, base_dir: Path) -> "RlConfig":
        """A relative reward run: the recipe's folder, else the current directory. A reward
        file, or a module that sits beside the recipe: that file, by its absolute path."""
        update = {}
        if self.reward_model is not None and not Path(self.reward_model).expanduser().is_absolute():
            given = Path(self.reward_model).expanduser()
            found = [p for p in (base_dir / given, Path.cwd() / given) if (p / "final").is_dir()]
            update["reward_model"] = str((found[0] if found else base_dir / given).absolute())
        if self.reward_function is not None:
            module, _, func = self.reward_function.rpartition(":")
            beside = base_dir / (module.replace(".", "/") + ".py")
            if module.endswith(".py"):
                path = Path(module).expanduser()
                update["reward_function"] = f"{path if path.is_absolute() else base_dir / path}:{func}"
            elif beside.is_file():
                update["reward_function"] = f"{beside}:{func}"
        return self.model_copy(update=update)


@register_method
class Rl(TrlMethod):
    name = "rl"
    Config = RlConfig
    config: RlConfig
    summary = "online RL (GRPO or RLOO) against a reward model run or a reward function (trl)"
    tasks = frozenset({"prompts"})
    pair_score = None  # no pairs: evaluated by sampling and scoring replies (_rl_eval.py)

    def generated_tokens(self) -> int:
        return self.config.max_completion_length

    def check(self, recipe) -> None:
        c, t = self.config, recipe.train
        per_step = t.batch_size * t.grad_accum
        if per_step % c.num_generations:
            raise UserError(f"method.num_generations {c.num_generations} must divide train.batch_size x "
                            f"train.grad_accum ({t.batch_size} x {t.grad_accum} = {per_step}): each prompt's "
                            f"completions are compared within one generation batch. Set train.batch_size to a "
                            f"multiple of {c.num_generations}, or method.num_generations to a divisor of {per_step}")
        if recipe.eval.batch_size % c.num_generations:
            raise UserError(f"method.num_generations {c.num_generations} must divide eval.batch_size "
                            f"{recipe.eval.batch_size} (evaluation samples completions the same way)")
        if c.max_completion_length >= recipe.data.max_length:
            raise UserError(f"method.max_completion_length {c.max_completion_length} leaves no room for the prompt "
                            f"in data.max_length {recipe.data.max_length}; raise data.max_length")

    def trl_config(self, recipe):
        from trl import GRPOConfig, RLOOConfig

        c = self.config
        return (GRPOConfig if c.algorithm == "grpo" else RLOOConfig), {
            "num_generations": c.num_generations, "max_completion_length": c.max_completion_length,
            "temperature": c.temperature, "top_p": c.top_p, "beta": c.beta, "epsilon": c.epsilon,
            "num_iterations": c.num_iterations, "log_completions": False}

    def prepare_rows(self, rows: list[dict], tok, recipe) -> list[dict]:
        """Text prompts rendered as the model reads them (data.prompt_style; `auto` follows a
        parent run), then cut to fit beside the completion."""
        from llmtune.data.prompt_style import render_text_prompts
        from llmtune.methods.parent_run import recipe_prompt_format
        from llmtune.methods.preference._rl_rewards import fit_prompts

        rows = render_text_prompts(rows, *recipe_prompt_format(recipe), tok)
        return fit_prompts(rows, tok, recipe.data.max_length - self.config.max_completion_length)

    def manifest_extra(self, setup: Setup) -> dict:
        from llmtune.methods.parent_run import recipe_prompt_format
        from llmtune.methods.preference._rl_rewards import resolve_reward

        style, template = recipe_prompt_format(setup.recipe)
        return {"reward": resolve_reward(self.config), "algorithm": self.config.algorithm,
                "prompt_format": {"style": style, "template": template}}

    def build_trainer(self, setup, model, tok, train, eval, args, callbacks, ref_model):
        from trl import GRPOTrainer, RLOOTrainer

        from llmtune.methods.preference._models import make_name_loadable
        from llmtune.methods.preference._rl_rewards import build_reward

        c = self.config
        if c.beta > 0 and c.peft is None:
            make_name_loadable(model, setup.workdir / "reference")
        trainer_cls = GRPOTrainer if c.algorithm == "grpo" else RLOOTrainer
        return trainer_cls(model=model, reward_funcs=[build_reward(c, setup.recipe)], args=args,
                           train_dataset=train, eval_dataset=eval, processing_class=tok, callbacks=callbacks,
                           peft_config=self.peft(setup))

    def reference(self, setup: Setup, model):
        return None  # GRPO/RLOO build their own (see build_trainer)

    def evaluate(self, recipe, final_dir: Path | None, limit: int | None, reporter) -> dict[str, Any] | None:
        from llmtune.methods.preference._rl_eval import evaluate_policy

        return evaluate_policy(self, recipe, final_dir, limit, reporter)
