"""Names of the OpenTelemetry GenAI semantic conventions for our operations and providers.

Apart from fastgw.obs.tracing so the AI handler can name spans without importing the SDK.
"""

from __future__ import annotations

GEN_AI_OPERATIONS = {"chat": "chat", "messages": "chat", "completions": "text_completion",
                     "embeddings": "embeddings", "models": "list_models"}
"""Our AI operation -> ``gen_ai.operation.name``."""
GEN_AI_PROVIDERS = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic",
                    "gemini": "gcp.gemini", "deepseek": "deepseek"}
"""Provider types with a well-known ``gen_ai.provider.name``; the others report their type."""


def gen_ai_provider(kind: str) -> str:
    """``gen_ai.provider.name`` for one of our provider types."""
    return GEN_AI_PROVIDERS.get(kind, kind)
