"""Options shared by the preference/RL methods (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from llmtune.methods.peft_backed.lora import LoraConfig


class PeftSection(LoraConfig):
    """LoRA on top of a preference/RL method: the same options as `method.name: lora`.

    With it, only the adapters (and a reward model's score head) train, and the frozen base
    serves as the reference model, so no second copy of the model is kept in memory."""

    name: Literal["lora"] = "lora"
    """Adapter kind; LoRA (with its DoRA and rsLoRA switches) is the one offered here."""


def peft_config(section: PeftSection | None, *, sequence_classifier: bool = False):
    """The peft config for `section` (None: full training), built by the lora method itself."""
    if section is None:
        return None
    from llmtune.methods.peft_backed.lora import Lora

    cfg = Lora(section).peft_config(causal=not sequence_classifier)
    if sequence_classifier:
        from peft import TaskType

        # SEQ_CLS makes peft train and save the new score head next to the adapters.
        cfg.task_type = TaskType.SEQ_CLS
    return cfg
