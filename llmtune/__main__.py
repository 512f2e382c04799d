"""`python -m llmtune ...`: the same CLI, for launchers that start modules (torchrun -m)."""

from llmtune.cli import main

main()
