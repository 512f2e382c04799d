"""Models: where weights come from (built-ins, local folders, hub ids) and task heads."""
