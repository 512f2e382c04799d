"""Methods that train nothing: the model answers from prompts."""
