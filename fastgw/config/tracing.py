"""The top-level ``tracing`` key: OpenTelemetry traces exported over OTLP/HTTP.

``tracing``
    ``null`` (the default: no tracing, and no per-request cost) or
    ``{otlp_endpoint, sample_ratio: 1.0, service_name: fastgw}``:

    - ``otlp_endpoint``: the collector's OTLP/HTTP traces URL
      (``http://collector:4318/v1/traces``); required.
    - ``sample_ratio``: the share of new traces recorded, 0 to 1. A request whose
      ``traceparent`` says its caller sampled it is recorded; one that says not, is not.
    - ``service_name``: the ``service.name`` resource attribute of every span.

Normalised: ``None`` or ``{otlp_endpoint: str, sample_ratio: float, service_name: str}``.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from fastgw.config import net
from fastgw.config.fields import Issues, mapping, required, text

TRACING_KEYS = ("otlp_endpoint", "sample_ratio", "service_name")


def tracing(value: Any, issues: Issues) -> dict | None:
    """Check the ``tracing`` mapping (``None``/``false`` turns tracing off)."""
    if value is None or value is False:
        return None
    given = mapping(value, "tracing", issues, TRACING_KEYS)
    if given is None:
        return None
    if find_spec("opentelemetry.sdk") is None or find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        issues.add("tracing", "needs the OpenTelemetry SDK and OTLP exporter: pip install 'fastgw[tracing]'")
    out = {
        "otlp_endpoint": required(given, "otlp_endpoint", "tracing", issues, net.base_url),
        "sample_ratio": _ratio(given.get("sample_ratio", 1.0), issues),
        "service_name": text(given["service_name"], "tracing.service_name", issues)
        if "service_name" in given else "fastgw",
    }
    return out


def _ratio(value: Any, issues: Issues) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        issues.add("tracing.sample_ratio", f"expected a number from 0 to 1, found {issues.describe(value)}")
        return None
    return float(value)
