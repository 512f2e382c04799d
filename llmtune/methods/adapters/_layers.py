"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), our own small version.

An adapter is a down-projection, a non-linearity and an up-projection added back onto
its input (a residual). It is placed on the output of a block's attention output
projection and/or its feed-forward output projection, *before* the block adds its own
residual and normalises. Wrapping that projection with `AdaptedProjection` puts it exactly
there for BERT (BertSelfOutput/BertOutput `dense`), Llama (`o_proj`, `down_proj`) and
GPT-2 (`attn.c_proj`, `mlp.c_proj`) without copying any of their forward code.

The up-projection starts at zero, so a freshly adapted model computes exactly what the
base model computes; training moves it away from there.

Saved format (documented in docs/methods.md): `bottleneck_adapter.json` (settings and the
module path of each site inside a block) + `bottleneck_adapter.safetensors` holding only
the adapter tensors, named `layers.<block>.<site>.{down,up}.{weight,bias}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from llmtune.errors import UserError
from llmtune.models.layers import transformer_blocks

CONFIG_FILE = "bottleneck_adapter.json"
WEIGHTS_FILE = "bottleneck_adapter.safetensors"
FORMAT = "llmtune.bottleneck_adapter"
FORMAT_VERSION = 1

# Where each architecture keeps the projection that ends a sub-block, relative to one
# transformer block. The first path that exists in the block is used.
SITE_PATHS: dict[str, tuple[str, ...]] = {
    "attention": (
        "attention.output.dense",  # BERT, RoBERTa, MiniLM (BertSelfOutput)
        "self_attn.o_proj",        # Llama, Mistral, Qwen
        "attn.c_proj",             # GPT-2
        "self_attn.out_proj",      # OPT, BART-style decoders
        "attention.out_lin",       # DistilBERT
    ),
    "ffn": (
        "output.dense",            # BERT (BertOutput)
        "mlp.down_proj",           # Llama, Mistral, Qwen
        "mlp.c_proj",              # GPT-2
        "fc2",                     # OPT
        "ffn.lin2",                # DistilBERT
    ),
}

# Houlsby: after attention and after the feed-forward block; Pfeiffer: after the
# feed-forward block only (half the adapters, nearly the same accuracy in their paper).
PLACEMENTS: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    """x -> up(act(down(x))); the caller adds x back."""

    def __init__(self, hidden: int, bottleneck: int, activation: str, *, dtype=None, device=None):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck, dtype=dtype, device=device)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden, dtype=dtype, device=device)
        # Zero up-projection: the adapter starts as the identity, so training begins
        # from exactly the pretrained model.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class AdaptedProjection(nn.Module):
    """A block's output projection followed by a bottleneck adapter with a residual."""

    def __init__(self, base: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        return out + self.adapter(out)


def find_sites(body: nn.Module, placement: str) -> dict[str, str]:
    """{site: path inside a block} for this architecture, or a UserError naming what is missing."""
    block = transformer_blocks(body)[0]
    found = {}
    for site in PLACEMENTS[placement]:
        path = next((p for p in SITE_PATHS[site] if _has_module(block, p)), None)
        if path is None:
            raise UserError(
                f"method adapter: cannot find the {site} output projection in {type(block).__name__} "
                f"(looked for {', '.join(SITE_PATHS[site])}); this architecture is not supported by "
                f"bottleneck adapters yet; use method lora or ia3")
        found[site] = path
    return found


def _has_module(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
    except AttributeError:
        return False
    return True


def insert_adapters(body: nn.Module, sites: dict[str, str], hidden: int, bottleneck: int,
                    activation: str) -> dict[str, Bottleneck]:
    """Wrap each site's projection in every block; return the adapters by their saved name."""
    adapters: dict[str, Bottleneck] = {}
    for i, block in enumerate(transformer_blocks(body)):
        for site, path in sites.items():
            parent_path, _, attr = path.rpartition(".")
            parent = block.get_submodule(parent_path) if parent_path else block
            proj = getattr(parent, attr)
            if isinstance(proj, AdaptedProjection):
                raise RuntimeError(f"block {i} {site} already has an adapter")
            weight = next(proj.parameters())
            adapter = Bottleneck(hidden, bottleneck, activation, dtype=weight.dtype, device=weight.device)
            setattr(parent, attr, AdaptedProjection(proj, adapter))
            adapters[f"layers.{i}.{site}"] = adapter
    return adapters


def adapter_state(adapters: dict[str, Bottleneck]) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.detach().cpu().contiguous()
            for name, mod in adapters.items() for k, v in mod.state_dict().items()}


def find_adapters(body: nn.Module, sites: dict[str, str]) -> dict[str, Bottleneck]:
    """The adapters already inserted in `body`, by their saved name."""
    out = {}
    for i, block in enumerate(transformer_blocks(body)):
        for site, path in sites.items():
            mod = block.get_submodule(path)
            if not isinstance(mod, AdaptedProjection):
                raise RuntimeError(f"block {i} {site} ({path}) has no adapter")
            out[f"layers.{i}.{site}"] = mod.adapter
    return out


def save_adapters(out_dir: Path, adapters: dict[str, Bottleneck], settings: dict) -> None:
    from safetensors.torch import save_file

    save_file(adapter_state(adapters), str(Path(out_dir) / WEIGHTS_FILE))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "weights": WEIGHTS_FILE, **settings}
    (Path(out_dir) / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config(from_dir: Path) -> dict:
    path = Path(from_dir) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{from_dir}: no {CONFIG_FILE}; this folder was not saved by method adapter")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT or config.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path}: format {config.get('format')!r} version {config.get('format_version')!r} "
                        f"is not one this llmtune reads ({FORMAT} <= {FORMAT_VERSION}); upgrade llmtune")
    return config


def load_adapters(body: nn.Module, from_dir: Path) -> dict[str, Bottleneck]:
    """Insert the adapters a folder describes into a fresh base body and load their weights."""
    from safetensors.torch import load_file

    config = read_config(from_dir)
    blocks = transformer_blocks(body)
    hidden = body.config.hidden_size
    paths_found = all(_has_module(blocks[0], path) for path in config["sites"].values())
    if config["hidden_size"] != hidden or config["num_layers"] != len(blocks) or not paths_found:
        raise UserError(
            f"{from_dir}: adapters were trained for {config.get('architecture')} with hidden size "
            f"{config['hidden_size']}, {config['num_layers']} blocks and sites {config['sites']}, but this base "
            f"model is {type(body).__name__} with {hidden} and {len(blocks)}; "
            f"load them onto the base model they were trained on ({config.get('base_model')})")
    adapters = insert_adapters(body, config["sites"], hidden, config["bottleneck_size"], config["activation"])
    weights = load_file(str(Path(from_dir) / config["weights"]))
    expected = adapter_state(adapters)
    if set(weights) != set(expected):
        missing = sorted(set(expected) - set(weights))[:3]
        extra = sorted(set(weights) - set(expected))[:3]
        raise UserError(f"{from_dir}: adapter weights do not match the config (missing {missing}, "
                        f"unexpected {extra}); the folder is damaged or mixed from two runs")
    for name, adapter in adapters.items():
        prefix = f"{name}."
        adapter.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    return adapters
