"""The one exception config loading raises, carrying every problem at once."""

from __future__ import annotations


class ConfigError(Exception):
    """A config is invalid; ``errors`` lists every problem as ``field.path: message``.

    All problems are reported together so an operator fixes a file in one round trip
    instead of one error per run.
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))
