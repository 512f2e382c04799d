"""Compare `llmtune preview`'s training-memory estimate with what one training step takes.

For each case, in a fresh process: build a Llama-shaped causal LM from a config (random
weights), apply the method, then run optimizer steps on a batch of `--batch` x `--length`
tokens. Measured: on a GPU, torch's peak allocated memory minus the weights; on a CPU, the
rise of the process's peak resident memory over its level before the first step (the
allocator's caching and the libraries' own buffers included, so an upper bound). Estimated:
gradients + optimizer state + activations from llmtune.preview.memory.estimate.

    python scripts/preview_memory_check.py [--batch 8] [--length 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SHAPE = {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8,
         "num_key_value_heads": 8, "vocab_size": 8000, "max_position_embeddings": 1024}
CASES = {"full": {"name": "full"}, "lora r16 all-linear": {"name": "lora", "r": 16, "target_modules": "all-linear"}}


def one_case(method: dict, batch: int, length: int) -> dict:
    import resource

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llmtune.methods.registry import get_method
    from llmtune.models.task_model import TaskModel
    from llmtune.preview.memory import ModelShape, _sizes, estimate
    from llmtune.recipe.full_schema import Recipe
    from llmtune.train.assemble import prepare_for_training
    from llmtune.train.optim import build_optimizer

    recipe = Recipe.model_validate({"model": {"name": "x"}, "data": {"task": "causal_lm", "train": "x.txt"},
                                    "method": method, "train": {"batch_size": batch, "precision": "fp32"}})
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE)
    model = TaskModel(AutoModelForCausalLM.from_config(config), "causal_lm")
    prepare_for_training(model, get_method(method["name"])(recipe.method))
    model.to(device).train()
    shape = ModelShape(*_sizes(model), True, config, True)
    est = estimate(shape, recipe, batch, length)
    optimizer = build_optimizer(model, 1e-4, 0.0)
    ids = torch.randint(0, SHAPE["vocab_size"], (batch, length), device=device)
    mask = torch.ones_like(ids)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):  # the second step holds the optimizer state too
        loss, _ = model(ids, mask, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated() - base
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    estimated = (est["gradients_mib"] + est["optimizer_mib"] + est["activations_mib"]) * 2**20
    return {"trainable": shape.trainable, "total": shape.total, "estimated_mib": round(estimated / 2**20, 1),
            "measured_mib": round(measured / 2**20, 1), "device": "cuda" if cuda else "cpu",
            "activations_mib": est["activations_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(CASES[args.case], args.batch, args.length)))
        return
    print(f"Llama shape {SHAPE}, batch {args.batch} x {args.length} tokens, fp32")
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name, "--batch", str(args.batch), "--length",
                              str(args.length)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:22s} trainable {r['trainable']:>11,} of {r['total']:,}: estimated {r['estimated_mib']:8.1f} "
              f"MiB (activations {r['activations_mib']:.1f}), measured {r['measured_mib']:8.1f} MiB on {r['device']}, "
              f"ratio {r['measured_mib'] / r['estimated_mib']:.2f}")


if __name__ == "__main__":
    main()
