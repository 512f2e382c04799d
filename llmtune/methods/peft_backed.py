"""What every method that peft implements does the same way: wrap the body with
get_peft_model, save the adapter with save_pretrained (plain peft loads it), merge."""

from __future__ import annotations

from pathlib import Path

from llmtune.methods.base import Method


class PeftMethod(Method):
    """A method that is a peft config. Subclasses implement `peft_config(causal)`."""

    can_merge = True

    def peft_config(self, causal: bool):
        raise NotImplementedError

    def apply(self, model) -> None:
        from peft import get_peft_model

        from llmtune.errors import UserError

        try:
            model.body = get_peft_model(model.body, self.peft_config(model.is_causal))
        except ValueError as exc:  # peft's word on targets that do not exist or do not fit
            raise UserError(f"method {self.name}: peft refused the settings ({exc}); check "
                            f"method.target_modules against the model's module names") from None
        if model.head is not None:
            model.head.requires_grad_(True)

    def save(self, model, out_dir: Path) -> None:
        model.body.save_pretrained(out_dir)
        model.save_head(out_dir)

    def load(self, model, from_dir: Path) -> None:
        from peft import PeftModel

        model.body = PeftModel.from_pretrained(model.body, str(from_dir))
        model.load_head(from_dir)

    def merge(self, model):
        return model.body.merge_and_unload()
