"""Filters: the registry of built-in filters, and building a chain from config.

A route or model names its filters in config, in order::

    filters:
      - auth                                  # a built-in, by name
      - {name: ratelimit}
      - {use: "mypkg.filters:Stamp", header: x-team}   # a Python plugin: module:Class + options

Plugins may also be installed under the ``fastgw.filters`` entry-point group and named
like built-ins. A filter class is built once per generation as ``cls(options, env)``;
``env`` lends it the generation's shared engines (authenticator, limiter, guard...).
"""

from __future__ import annotations

import importlib
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from fastgw.filters.api import API_VERSION, Filter, Phase, Status
from fastgw.filters.chain import EMPTY, Chain

if TYPE_CHECKING:
    from fastgw.generation import Resources

__all__ = ["API_VERSION", "NOT_ON_MODELS", "BUILTIN", "EMPTY", "BuildEnv", "Chain", "Filter", "Phase", "Status", "build", "load_class"]

BUILTIN = {
    "auth": "fastgw.filters.auth:Auth",
    "ratelimit": "fastgw.filters.ratelimit:RateLimit",
}
"""Filters a config may name. The others are built from their own config sections: observe on
every chain, transform from a route's or model's ``transform``, and the AI front door's
decode, prompts, route, guard, cache, ratelimit and usage from ``prompts``, ``guard``,
``cache`` and ``limits``."""
NOT_ON_MODELS = {
    "auth": "runs before the model is known: every AI request is authenticated already "
            "(consumers' 'models' lists say who may call which)",
    "ratelimit": "every AI request is limited already by the rules of 'limits' (match them by model)",
}
"""Built-ins a model's ``filters`` may not name, and why."""


def load_class(ref: str) -> type[Filter]:
    """A filter class from a built-in name, an installed entry point, or ``module:Class``."""
    target = BUILTIN.get(ref)
    if target is None and ":" not in ref:
        found = [ep for ep in entry_points(group="fastgw.filters") if ep.name == ref]
        if not found:
            raise ValueError(f"unknown filter {ref!r}")
        cls = found[0].load()
    else:
        module, _, name = (target or ref).partition(":")
        cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Filter)):
        raise ValueError(f"{ref!r} is not a fastgw Filter class")
    wanted = getattr(cls, "api_version", API_VERSION)
    if wanted != API_VERSION:
        raise ValueError(f"filter {ref!r} was written for filter API {wanted}, this gateway has {API_VERSION}")
    return cls


class BuildEnv:
    """What a generation lends the filters it builds; engines are built on first use and shared."""

    def __init__(self, config: dict[str, Any], resources: Resources) -> None:
        self.config = config
        self.resources = resources

    @cached_property
    def authenticator(self) -> Any:
        from fastgw.auth import Authenticator

        return Authenticator(self.config)

    @cached_property
    def limiter(self) -> Any:
        from fastgw.limits import Limiter

        if not self.config["limits"]:
            return None
        r = self.resources
        return Limiter(self.config["limits"], store=r.limit_store, redis=r.redis_link, stats=r.limit_stats)

    @cached_property
    def trace(self) -> Filter | None:
        """The tracing filter every chain gets when the config has a ``tracing`` section
        (stateless: one object serves every chain). The SDK is imported only then."""
        spec = self.config.get("tracing")
        if not spec:
            return None
        from fastgw.filters.trace import Trace

        return Trace(self.resources.tracing_for(spec))

    @cached_property
    def lanes(self) -> Filter | None:
        """The gray-release tagger every chain gets when the config has ``lanes`` (stateless:
        one object serves every chain)."""
        if not self.config.get("lanes"):
            return None
        from fastgw.filters.lanes import Lanes

        return Lanes(self.config["lanes"])

    @cached_property
    def guard(self) -> Any:
        from fastgw.guard import Guard

        spec = self.config["guard"]
        return Guard(spec) if spec["rules"] or spec["moderation"] else None


def build(specs: list[dict[str, Any]], env: BuildEnv) -> list[Filter]:
    """Filter objects for a route's or model's ``filters`` list (normalised by the config layer)."""
    return [load_class(spec["use"])(spec["options"], env) for spec in specs]
