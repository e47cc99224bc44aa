"""Observability: per-worker metrics (:mod:`.metrics`), the JSON access log and the usage stream (:mod:`.accesslog`)."""
