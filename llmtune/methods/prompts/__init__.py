"""Learned inputs: soft prompts (prompt tuning, p-tuning) in front of the input embeddings, and
prefixes in front of the keys and values of every attention layer. The modules starting with `_`
are their torch halves."""
