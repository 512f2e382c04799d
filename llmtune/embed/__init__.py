"""Feature extraction: texts in, one vector per text out, rows in input order.

- `inputs`: stream (id, text) chunks from .txt, .jsonl, .csv, .tsv or .parquet files.
- `loading`: a model name or a run directory -> tokenizer, body and the run's defaults.
- `llmtune.models.encoder` (shared with the linear probe and the index): `Encoder.embed(texts)` /
  `embed_ids(...)`: length-sorted batches, each padded to its own longest row, pooled.
- `writers`: incremental .parquet, .npy and .jsonl writers (atomic: a crash leaves no half file).
- `run.embed_file`: the whole `llmtune embed` command as a library call.

Nothing here imports torch at module level, so `llmtune --help` stays instant.
"""
