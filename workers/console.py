"""The web console's data: a ring of once-a-second samples of the node, kept by the supervisor.

A daemon thread sums the workers' metric snapshots (the same ones ``/metrics`` reads) every
second and keeps the last hour of totals; ``/ui/data`` turns them into per-second rates. The
console's page and its charting library (uPlot, vendored from npm under ``workers/ui/``) are
static files: no CDN, nothing fetched from the internet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastgw.obs.metrics import Snapshot

UI_DIR = Path(__file__).resolve().parent / "ui"
UI_FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/ui/errors": ("errors.html", "text/html; charset=utf-8"),
    "/ui/errors.js": ("errors.js", "text/javascript; charset=utf-8"),
    "/ui/config": ("config.html", "text/html; charset=utf-8"),
    "/ui/config.js": ("config.js", "text/javascript; charset=utf-8"),
    "/ui/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/ui/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
}
HISTORY = 3600  # one hour at one sample a second
SERIES = ("requests", "errors", "tokens_in", "tokens_out")


def totals(snapshot: Snapshot) -> dict[str, float]:
    """Node-wide running totals from an aggregated metrics snapshot."""
    out = dict.fromkeys(SERIES, 0.0)
    plain = snapshot.get("fastgw_requests_total")
    if plain is not None:
        for (_, status_class, *_lane), value in plain[4].items():
            out["requests"] += value
            if status_class in ("4xx", "5xx"):
                out["errors"] += value
    ai = snapshot.get("fastgw_ai_requests_total")
    if ai is not None:
        for (_, _, _, status, *_lane), value in ai[4].items():
            out["requests"] += value
            if str(status) >= "400":
                out["errors"] += value
    tokens = snapshot.get("fastgw_tokens_total")
    if tokens is not None:
        for labels, value in tokens[4].items():
            out["tokens_in" if labels[-1] == "prompt" else "tokens_out"] += value
    return out


class ConsoleHistory:
    """The last hour of node totals, sampled by a daemon thread."""

    def __init__(self, collect: Callable[[], Snapshot], interval: float = 1.0) -> None:
        self.collect = collect
        self.interval = interval
        self.samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=HISTORY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastgw-console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.time(), totals(self.collect())))

    def series(self) -> dict[str, Any]:
        """Per-second rates between consecutive samples (uPlot's columnar shape)."""
        samples = list(self.samples)
        out: dict[str, Any] = {"t": [t for t, _ in samples[1:]], **{name: [] for name in SERIES}}
        for (t0, before), (t1, after) in zip(samples, samples[1:], strict=False):
            span = max(t1 - t0, 1e-6)
            for name in SERIES:
                out[name].append(max(0.0, after[name] - before[name]) / span)
        return out
