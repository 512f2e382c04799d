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

    def apply(self, body, *, causal: bool):
        from peft import get_peft_model

        from llmtune.errors import UserError

        try:
            return get_peft_model(body, self.peft_config(causal))
        except ValueError as exc:  # peft's word on targets that do not exist or do not fit
            raise UserError(f"method {self.name}: peft refused the settings ({exc}); check "
                            f"method.target_modules against the model's module names") from None

    def save(self, body, out_dir: Path) -> None:
        body.save_pretrained(out_dir)

    def load(self, body, from_dir: Path, *, causal: bool):
        from peft import PeftModel

        return PeftModel.from_pretrained(body, str(from_dir))

    def merge(self, body):
        return body.merge_and_unload()
