"""Data: rows from files or the hub -> task examples -> token ids, cached by content hash."""
