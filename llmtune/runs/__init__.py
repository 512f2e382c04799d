"""Finished runs: open one (open.py), evaluate it or a recipe's base model (evaluate.py),
export it for other tools (export.py). Used by `llmtune eval`, `export` and `embed`."""
