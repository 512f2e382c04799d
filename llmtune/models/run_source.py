"""A finished llmtune run as a model: `model.name: runs/sft` is the run's base with what the run
trained folded in, so that one stage (supervised finetuning, say) can start the next (DPO, RL).

Only a method knows how to fold what it saved into its base, and this floor may not import
the methods. So the recipe loader (recipe/load.py, which every command that trains, evaluates
or opens a run goes through) registers the function that does it (methods/parent_merge.py);
the loaders below only ask for the folder it returns. No torch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

RUN_MARKERS = ("recipe.yaml", "final/llmtune.json")
"""What makes a folder a finished run: its resolved recipe and final/ with llmtune.json."""

_merger: Callable[[Path], Path] | None = None


def is_run_dir(name: str | Path) -> bool:
    """Whether `name` is the directory of a finished llmtune run."""
    try:
        path = Path(name).expanduser()
        return all((path / marker).is_file() for marker in RUN_MARKERS)
    except (OSError, RuntimeError, ValueError):
        return False


def register_merger(merge: Callable[[Path], Path]) -> None:
    """`merge(run_dir) -> folder`: a plain model folder (config, weights, tokenizer) holding
    the run's base with what it trained folded in."""
    global _merger
    _merger = merge


def merged_source(run_dir: str | Path) -> Path:
    """The plain model folder a run directory loads from (made once, then cached)."""
    if _merger is None:  # a caller loaded a model without importing the recipe loader: a bug, not the user's
        raise RuntimeError("a run directory names the model, but llmtune.recipe.load (which registers the run "
                           "merger) was never imported")
    return _merger(Path(run_dir).expanduser().absolute())
