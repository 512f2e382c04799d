"""`llmtune serve`: an OpenAI-compatible HTTP API over a run, a recipe's base model or a
named model. A thin layer: what is computed comes from the shared cores (the encoder of
`llmtune embed`, the classifier `llmtune eval` scores, the inference core's generation);
this package parses requests, queues them to the one worker that owns the model, and
writes OpenAI-shaped answers and errors. FastAPI and uvicorn are imported only inside
functions, so `llmtune --help` stays instant."""
