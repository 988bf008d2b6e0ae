"""KServe models: the OpenAI-compatible LLM server, creative, predictor."""
