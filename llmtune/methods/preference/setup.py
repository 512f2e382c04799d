"""What a trl-backed method needs to build its trainer, in training or in evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Setup:
    recipe: Any
    workdir: Path
    """A scratch folder that lives as long as the trainer."""
    reporter: Any
    training: bool
    """False when the trainer is built only to evaluate a finished run (or the base model)."""
