"""The name a saved adapter records as its base model: a public one, never a path inside
site-packages or a temporary folder that means nothing on another machine.

peft writes `base_model_name_or_path` (adapter_config.json, and `base_model` plus a tag in
the README's model card) from the body's `name_or_path`, which for the bundled MiniLM is
the package's folder under site-packages. Recorded instead:
- the bundled MiniLM: its hub id, sentence-transformers/all-MiniLM-L6-v2;
- a local folder: the name its config.json carries when that is a hub id, else the path the
  user gave (the body's name_or_path is the recipe's `model.name`);
- a hub id: itself; a built-in tiny model: nothing (it has no name outside llmtune).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmtune.errors import UserError
from llmtune.models import builtin

ADAPTER_CONFIG = "adapter_config.json"


def public_name(name_or_path: str) -> str:
    if not name_or_path:
        return name_or_path
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return name_or_path  # a hub id
    try:
        if path.resolve() == builtin.minilm_path().resolve():
            return builtin.MINILM_HUB_ID
    except UserError:  # the bundled encoder is not installed: this is some other folder
        pass
    recorded = _config_name(path)
    return recorded if recorded and not Path(recorded).expanduser().is_absolute() and \
        not Path(recorded).expanduser().exists() else name_or_path


def _config_name(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("_name_or_path")
    return name if isinstance(name, str) and name else None


def publish_base_name(folder: Path) -> None:
    """Rewrite a saved peft adapter's base model (config and model card) to its public name."""
    config_file = Path(folder) / ADAPTER_CONFIG
    if not config_file.exists():
        return
    config = json.loads(config_file.read_text())
    given = config.get("base_model_name_or_path") or ""
    name = public_name(given)
    if name == given:
        return
    config["base_model_name_or_path"] = name
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = Path(folder) / "README.md"
    if card.exists() and given:  # peft's model card: `base_model:` and a `base_model:adapter:` tag
        card.write_text(card.read_text().replace(given, name))
