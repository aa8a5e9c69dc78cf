"""The local HTTP API: per-user tokens and an OpenAI-compatible server for other on-prem tools."""
