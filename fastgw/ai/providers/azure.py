"""Azure OpenAI: OpenAI's bodies under per-deployment paths, keyed with ``api-key``.

The body is OpenAI's, so this adapter is a passthrough; what differs is the URL (deployment
and ``api-version``), the auth header, the prompt-filter chunks that open Azure streams, and
content-filter refusals that clients need told apart from other 400s.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastgw.ai.providers.base import ProviderError, UpstreamCall
from fastgw.ai.providers.openai import (
    JSON_CONTENT,
    OP_PATHS,
    OpenAIAdapter,
    OpenAIStream,
    error_text,
)

DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane version when this was written


class AzureStream(OpenAIStream):
    """Azure sends a first chunk with ``choices: []`` and only ``prompt_filter_results`` (and may
    repeat such chunks): clients expect every chunk to carry a choice, so those are dropped. A
    usage-only chunk (``stream_options.include_usage``) also has no choices and is kept."""

    def keep(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if not chunk.get("choices") and not isinstance(chunk.get("usage"), dict):
            return []
        return [chunk]


class AzureAdapter(OpenAIAdapter):
    """base_url is the resource endpoint, ``https://<resource>.openai.azure.com``.

    Options: ``api_version`` (default 2024-10-21) and ``deployments`` mapping a target model to
    its deployment name (by default the deployment is named like the model).
    """

    type = "azure"
    stream_type = AzureStream

    def default_base_url(self) -> str:
        raise ProviderError("provider type 'azure' needs base_url, the resource endpoint")

    def path(self, op: str, model: str) -> str:
        deployment = (self.options.get("deployments") or {}).get(model, model)
        version = self.options.get("api_version") or DEFAULT_API_VERSION
        return (
            f"{self.base_path}/openai/deployments/{quote(str(deployment), safe='')}{OP_PATHS[op]}"
            f"?api-version={quote(str(version), safe='')}"
        )

    def probe(self, api_key: str | None) -> UpstreamCall:
        version = quote(str(self.options.get("api_version") or DEFAULT_API_VERSION), safe="")
        return UpstreamCall(b"GET", f"{self.base_path}/openai/models?api-version={version}".encode(), self.headers(api_key), b"")

    def headers(self, api_key: str | None) -> list[tuple[bytes, bytes]]:
        headers = [JSON_CONTENT]
        if api_key:
            headers.append((b"api-key", api_key.encode("latin-1")))
        return headers + self.option_headers

    def error(self, status: int, body: bytes) -> tuple[str, str | None]:
        """Content-filter refusals keep code ``content_filter`` and name the categories that fired."""
        message, code = error_text(status, body)
        if code == "content_filter":
            categories = _filtered_categories(body)
            if categories:
                message = f"{message} (filtered: {', '.join(categories)})"
        return message, code


def _filtered_categories(body: bytes) -> list[str]:
    """The categories flagged in ``error.innererror.content_filter_result``, in Azure's order."""
    try:
        result = json.loads(body)["error"]["innererror"]["content_filter_result"]
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(result, dict):
        return []
    return [name for name, verdict in result.items() if isinstance(verdict, dict) and verdict.get("filtered")]
