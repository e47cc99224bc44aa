"""Exit codes a worker uses to tell the supervisor *why* it could not start.

They are a contract (gunicorn's ``WORKER_BOOT_ERROR``/``APP_LOAD_ERROR``): a worker that
exits with one of these before it ever became ready would fail the same way again, so
the supervisor halts with a clear error instead of fork-looping.
"""

from __future__ import annotations

WORKER_BOOT_ERROR = 3
"""The worker could not start (import failure, cannot serve on its socket, ...)."""

WORKER_CONFIG_ERROR = 4
"""The worker rejected the live config generation."""

HALT_CODES = {
    WORKER_BOOT_ERROR: "boot error",
    WORKER_CONFIG_ERROR: "config error",
}
"""Codes that halt the supervisor when the worker never became ready, with their names for logs."""
