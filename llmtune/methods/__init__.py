"""Finetuning methods. Each module registers one method; the registry is the only list."""

from llmtune.methods import frozen_head, full, lora  # noqa: F401
from llmtune.methods import adapter, ia3  # noqa: F401
from llmtune.methods import prefix, soft_prompt  # noqa: F401
from llmtune.methods import preference  # noqa: F401  (reward, rl, dpo, kto, orpo)
from llmtune.methods import linear_probe  # noqa: F401
