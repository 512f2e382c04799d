"""`llmtune report` and `llmtune compare`: what a run (or a set of runs) cost and achieved.

Every number comes from the run's manifest.json (fields.py lists the keys read) and its
resolved recipe.yaml; metrics.jsonl feeds the learning-curve plots only. Nothing here
imports torch at module level: reading, tabulating and plotting finished runs needs none.
"""
