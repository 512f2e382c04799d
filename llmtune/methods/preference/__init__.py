"""Preference and RL methods, run through trl: reward models, online RL (GRPO/RLOO), and
the direct preference family (DPO, KTO, ORPO). Each module registers one method."""

from llmtune.methods.preference import dpo, kto, orpo, reward, rl  # noqa: F401
