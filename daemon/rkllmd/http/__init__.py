"""OpenAI-compatible HTTP API and management dialects: thin skins over ModelManager."""
