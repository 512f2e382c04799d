"""Options every generating command shares (chat, generate): how answers are drawn. The
checks themselves live in llmtune.generation.params.SamplingParams."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from llmtune.generation.params import SamplingParams

TARGET_HELP = ("A run directory (any method whose result is a causal LM), a folder `llmtune export` wrote, a "
               "recipe (its base model), or a model: built-in name (smollm2-135m, tiny-llama), local folder, "
               ".gguf file or hub id.")


def temperature_option():
    return typer.Option(0.0, "--temperature", min=0.0, help="0 (the default): greedy, the most likely token each "
                        "step. Above 0: sample; below 1 sharper, above 1 flatter.")


def top_p_option():
    return typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Sample only from the most likely tokens whose "
                        "probabilities add up to this (with --temperature above 0).")


def max_new_tokens_option(default: int):
    return typer.Option(default, "--max-new-tokens", min=1, help="Tokens per answer at most (fewer where the "
                        "model's context ends).")


def seed_option():
    return typer.Option(0, "--seed", help="Seed of sampling: the same seed gives the same answers.")


def sampling(max_new_tokens: int, temperature: float, top_p: float, seed: int,
             stop: list[str] | None = None) -> "SamplingParams":
    from llmtune.generation.params import SamplingParams

    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                          stop=tuple(stop or ()))
