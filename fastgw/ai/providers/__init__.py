"""Provider adapters, one module per wire format; ``adapter_for`` picks one by ``type``."""

from __future__ import annotations

import importlib
from typing import Any

from fastgw.ai.providers.base import Adapter

# type -> (module, class). Modules load on first use, so a config names only what it uses.
ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("fastgw.ai.providers.openai", "OpenAIAdapter"),
    "openai-compatible": ("fastgw.ai.providers.openai", "OpenAICompatibleAdapter"),
    "ollama": ("fastgw.ai.providers.openai", "OllamaAdapter"),
    "qwen": ("fastgw.ai.providers.openai", "QwenAdapter"),
    "deepseek": ("fastgw.ai.providers.openai", "DeepSeekAdapter"),
    "azure": ("fastgw.ai.providers.azure", "AzureAdapter"),
    "anthropic": ("fastgw.ai.providers.anthropic", "AnthropicAdapter"),
    "gemini": ("fastgw.ai.providers.gemini", "GeminiAdapter"),
}


def adapter_for(provider: dict[str, Any]) -> Adapter:
    module, cls = ADAPTERS[provider["type"]]
    return getattr(importlib.import_module(module), cls)(provider)
