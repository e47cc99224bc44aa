"""The admin plane's ``/metrics`` read back as samples, for tests that check counters."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def samples(admin: str) -> dict[tuple, float]:
    """Every sample on ``admin``'s ``/metrics``: ``(name, sorted labels) -> value``."""
    text = urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    """One sample of :func:`samples`' result, 0 when absent."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)
