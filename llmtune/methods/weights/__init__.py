"""Methods that train the model's own weights: every one (full) or a chosen part (frozen-head)."""
