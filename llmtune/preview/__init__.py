"""`llmtune preview`: what the model will see, before anything trains.

- examples.py: the recipe's rows after the whole data pipeline, as token sequences with
  their loss mask (supervised tasks through `prepare_data`, preference and RL tasks the way
  trl tokenizes them).
- show.py: those sequences token by token (rich colours on a terminal, plain markers
  otherwise) and as JSON.
- lengths.py: length statistics and token totals.
- memory.py: parameter counts on a weightless (meta) copy of the model and a memory estimate.
- timing.py: `--time`, a few real optimizer steps, timed, on the first batches.
- run.py: puts it together; nothing is trained for real and nothing is written.
"""
