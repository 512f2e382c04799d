"""Encoders trained for retrieval: a query lands near the passages that answer it."""
