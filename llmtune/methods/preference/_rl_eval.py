"""`llmtune eval` for online RL runs: sample completions for the eval prompts with the
trained policy (or the base model) and score them with the run's reward."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from llmtune.device import default_device
from llmtune.methods.preference._rl_rewards import build_reward, recorded_reward
from llmtune.methods.preference._rl_sampling import generation_config, trainer_args
from llmtune.methods.preference._runner import evaluation_rows
from llmtune.methods.preference._trainer import quiet_libraries
from llmtune.models.load import load_tokenizer


def sample(policy, tok, prompts: list, generation, num_generations: int, batch_size: int, seed: int) -> list:
    """`num_generations` sampled completions per prompt (`batch_size` prompts per generate call),
    drawn with `generation` (the trainer's GenerationConfig, _rl_sampling.generation_config)
    from prompts tokenised as trl does."""
    device = next(policy.parameters()).device
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
             for p in prompts]
    # Each prompt repeated num_generations times in a row, as trl's sampler repeats them.
    rows = [text for text in texts for _ in range(num_generations)]
    old_side, tok.padding_side = tok.padding_side, "left"
    torch.manual_seed(seed)
    out = []
    try:
        for i in range(0, len(rows), batch_size * num_generations):
            enc = tok(rows[i: i + batch_size * num_generations], return_tensors="pt", padding=True,
                      add_special_tokens=not isinstance(prompts[0], list)).to(device)
            gen = policy.generate(**enc, generation_config=generation)
            out.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        tok.padding_side = old_side
    return out


def evaluate_policy(method, recipe, final: Path | None, limit: int | None, reporter) -> dict:
    r, c = recipe, method.config
    with quiet_libraries(False):
        tok = load_tokenizer(str(final)) if final else load_tokenizer(r.model.name, r.model.trust_remote_code,
                                                                       r.model.revision)
        rows, split = evaluation_rows(r, limit)
        rows = method.prepare_rows(rows, tok, r)
        policy = method.load_trained(r, tok, final) if final else method.load_model(r, tok)
        policy.to(default_device()).eval()
        reward = build_reward(c, r, recorded_reward(final))
        prompts = [row["prompt"] for row in rows]
        with tempfile.TemporaryDirectory(prefix="llmtune-eval-") as work:
            args = trainer_args(method, r, Path(work))
        with torch.inference_mode():
            completions = sample(policy, tok, prompts, generation_config(args, policy, tok), args.num_generations,
                                 max(1, r.eval.batch_size // args.num_generations), r.train.seed)
        repeated = [row for row in rows for _ in range(c.num_generations)]
        if isinstance(prompts[0], list):
            completions = [[{"role": "assistant", "content": text}] for text in completions]
        columns = {k: [row[k] for row in repeated] for k in repeated[0] if k != "prompt"}
        raw = reward(prompts=[row["prompt"] for row in repeated], completions=completions, **columns)
        scores = [s for s in raw if s is not None]
    reporter.log(f"scored {len(scores)} completions ({c.num_generations} per prompt) of {len(rows)} {split} prompts")
    return {"split": split, "prompts": len(rows), "completions": len(scores),
            "mean_reward": statistics.fmean(scores) if scores else float("nan"),
            "mean_reward_se": _prompt_se(raw, c.num_generations),
            "std_reward": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
            "samples": _samples(repeated, completions, raw, c.num_generations)}


def _prompt_se(raw: list, per_prompt: int) -> float:
    """Standard error of the mean reward over prompts: one prompt's samples are not independent
    draws of the held-out population, its mean over them is."""
    from llmtune.evaluate.pairwise import mean_se

    means = []
    for i in range(0, len(raw), per_prompt):
        got = [s for s in raw[i:i + per_prompt] if s is not None]
        if got:
            means.append(statistics.fmean(got))
    return mean_se(means)[1]


def _samples(repeated: list, completions: list, scores: list, per_prompt: int, n: int = 3) -> list[dict]:
    """The first completion of the first `n` prompts with its reward, to see what the mean means."""
    out = []
    for i in range(0, min(len(repeated), n * per_prompt), per_prompt):
        text = completions[i][0]["content"] if isinstance(completions[i], list) else completions[i]
        out.append({"prompt": repeated[i]["prompt"], "completion": text, "reward": scores[i]})
    return out
