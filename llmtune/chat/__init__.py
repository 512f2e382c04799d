"""`llmtune chat`: a conversation with a causal LM in the terminal (or over a pipe), through
the generation core. conversation.py keeps the turns and fits them into the model's context;
session.py reads prompts and streams answers."""
