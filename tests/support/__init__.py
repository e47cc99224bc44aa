"""Helpers for the tests, not tests: gateway and mock-LLM processes, a private redis-server, an embedding server."""
