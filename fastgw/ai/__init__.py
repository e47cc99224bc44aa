"""The AI side of the gateway: OpenAI-compatible front door, model routing, providers."""
