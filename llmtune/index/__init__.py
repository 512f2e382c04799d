"""Document indexing and retrieval on Milvus (`llmtune index`, `query`, `ask`).

- `formats`: a file -> its text sections (.txt, .md, .html, .pdf, .jsonl/.csv/.tsv/.parquet rows);
  an unreadable file raises `Unreadable` with the reason.
- `settings`: what built a store (model, pooling, normalisation, chunking, index) and the
  refusal when a command asks for something else.
- `store`: the Milvus client wrapper (Milvus Lite on a local `.db` path, or a server URI):
  three collections (chunks, per-file state, settings).
- `sync`: the incremental, kill-safe `index` run (content hashes, hidden versions).
- `retrieve`: dense, BM25 and hybrid (reciprocal rank fusion) search with source filters.
- `answer`: retrieved chunks -> a prompt -> a local causal LM's greedy answer.
- `demos`: demonstrations for in-context learning drawn from a store.

The chunker (text -> token windows) is `llmtune.data.chunking` and the ranking metrics
`llmtune.evaluate.ir_metrics`: training-time retrieval evaluation, on a lower floor, uses them too.

Nothing here imports torch or pymilvus at module level.
"""
