"""The chat template is part of a run: what it trained with is fingerprinted in the manifest
(`chat_template_hash`), and anything that later loads a tokenizer for the run (eval, export,
ask, --resume) can check it still renders prompts the same way.

A template that changed between training and use (a hub model's template updated, a
tokenizer folder swapped) makes the model see prompts it was never trained on, silently:
these checks make it a warning that names both fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"


def template_text(tok) -> str | None:
    """The tokenizer's chat template as one string (named templates as sorted JSON), or None."""
    template = getattr(tok, "chat_template", None)
    if not template:
        return None
    if isinstance(template, dict):
        return json.dumps(template, sort_keys=True)
    return str(template)


def template_hash(tok) -> str | None:
    """Fingerprint of the tokenizer's chat template (None when it has none)."""
    text = template_text(tok)
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text is not None else None


def _manifest(run_or_manifest) -> dict | None:
    if isinstance(run_or_manifest, dict):
        return run_or_manifest
    path = Path(run_or_manifest)
    if path.is_dir():  # a run directory, or its final/ folder
        path = path / MANIFEST if (path / MANIFEST).exists() or path.name != "final" else path.parent / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def template_change(run_or_manifest, tok) -> str | None:
    """What differs between the trained template and `tok`'s, or None when they match or the
    run predates the fingerprint (nothing to compare with)."""
    manifest = _manifest(run_or_manifest)
    if not manifest or "chat_template_hash" not in manifest:
        return None
    trained, now = manifest["chat_template_hash"], template_hash(tok)
    if trained == now:
        return None
    if trained is None:
        return f"the run trained with no chat template, but this tokenizer has one ({now})"
    if now is None:
        return f"the run trained with chat template {trained}, but this tokenizer has none"
    return f"the run trained with chat template {trained}, but this tokenizer's is {now}"


def warn_if_template_changed(run_or_manifest, tok, reporter, doing: str = "using the model") -> bool:
    """Warn (through `reporter.warn`) when `tok`'s chat template is not the one the run trained
    with. `run_or_manifest`: a run directory, its final/ folder, a manifest.json path or the
    manifest dict. Returns whether it warned. For `ask` and any other command that loads a
    tokenizer for a trained run."""
    change = template_change(run_or_manifest, tok)
    if change is None:
        return False
    reporter.warn(f"{doing}: {change}; prompts are rendered differently from training, so answers and scores may "
                  f"be off. Use the tokenizer saved in the run's final/ folder (its chat template is the trained "
                  f"one)")
    return True


def check_saved_tokenizer(final_dir: Path, reporter, doing: str) -> None:
    """Warn when the tokenizer saved in a run's final/ no longer carries the trained template
    (the folder was edited or replaced after training)."""
    from llmtune.models.load import load_tokenizer

    final_dir = Path(final_dir)
    manifest = _manifest(final_dir)
    if manifest is None or "chat_template_hash" not in manifest:
        return
    warn_if_template_changed(manifest, load_tokenizer(str(final_dir)), reporter, doing)
