"""The AI front door of one config generation: which paths it serves, which models exist,
how each provider is reached, and the filter chain every AI request runs.

OpenAI-compatible paths (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/models``, ``/v1/models/{id}``) and Anthropic's ``/v1/messages`` and
``/v1/messages/count_tokens``; the model list and lookup answer in Anthropic's shape when the
client sends ``anthropic-version`` (as the Claude SDKs do). Everything here is built once per
generation; each request gets a :class:`~fastgw.ai.handler.ModelHandler`.

The chain, as one table (request order; the response side runs it in reverse)::

    Observe (OBSERVE)  Auth (AUTHN)  Decode (DECODE)  Prompts (PROMPT)  RouteModel (ROUTE)
    -> the model's filters: Transform, Guard (POLICY)  Cache (CACHE)  RateLimit (LIMIT)  Usage (METER)
    -> ModelHandler (failover over the model's targets)

The cache sits before the limits so a hit costs no quota; the guard before the cache so a
masked prompt is what the cache key sees.
"""

from __future__ import annotations

import fnmatch
import time
from typing import TYPE_CHECKING, Any

from fastgw.ai.dialects import ANTHROPIC, MODEL_PREFIX, OPENAI
from fastgw.ai.handler import ModelHandler
from fastgw.ai.health import Breaker, KeyPool, ProviderHealth
from fastgw.ai.prompts import Prompts
from fastgw.ai.providers import adapter_for
from fastgw.ai.providers.base import Adapter
from fastgw.ai.route import Decode, RouteModel
from fastgw.config.failover import FAILOVER
from fastgw.config.secrets import scrub, secret_values
from fastgw.filters import BuildEnv, Chain, Filter, Phase, build
from fastgw.filters.auth import Auth
from fastgw.filters.cache import CacheFilter
from fastgw.filters.guard import GuardFilter
from fastgw.filters.observe import Observe
from fastgw.filters.overload import Overload
from fastgw.filters.prompts import PromptsFilter
from fastgw.filters.ratelimit import RateLimit
from fastgw.filters.transform import TransformFilter
from fastgw.filters.usage import Usage
from fastgw.filters.waf import WafFilter
from fastgw.http.encoding import Compression
from fastgw.mock.core import MockLLM
from fastgw.proxy.upstream import PoolSet
from fastgw.server.stream import Stream
from fastgw.transform import Transform

if TYPE_CHECKING:
    from fastgw.generation import Resources

# path -> (operation, dialect)
PATHS = {
    b"/v1/chat/completions": ("chat", OPENAI),
    b"/v1/completions": ("completions", OPENAI),
    b"/v1/embeddings": ("embeddings", OPENAI),
    b"/v1/models": ("models", OPENAI),
    b"/v1/messages": ("messages", ANTHROPIC),
    b"/v1/messages/count_tokens": ("count_tokens", ANTHROPIC),
}

FAILOVER_DEFAULTS = {key: default for key, (_, default) in FAILOVER.items()}
MOCK_OPTIONS = ("chunks", "chunk_delay_ms", "fail_status", "stall_ms", "cut_after")


class ModelEntry:
    """A public model name (maybe with one ``*``) and its ordered failover chain."""

    __slots__ = ("name", "spec", "target_chain", "max_attempts", "failover", "filters", "chain", "compression",
                 "pricing")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name = spec["name"]
        self.spec = spec
        self.target_chain = spec["targets"]
        self.max_attempts = spec["max_attempts"]
        self.failover: dict[str, Any] = spec.get("failover") or FAILOVER_DEFAULTS
        self.filters: list[Filter] = []
        self.chain: Chain | None = None  # the AI chain plus this model's filters (AIFrontDoor)
        self.compression = Compression.of(spec.get("compression"))
        price = spec.get("pricing")  # USD per token: input, output, cached input
        self.pricing = None if price is None else (
            price["input_per_mtok"] * 1e-6, price["output_per_mtok"] * 1e-6, price["cached_input_per_mtok"] * 1e-6)

    def cost(self, usage: dict[str, Any]) -> float | None:
        """USD for a call's ``usage`` by this model's ``pricing`` (None without one); prompt-cache
        reads (``cached_tokens``, part of ``prompt_tokens``) at the cached-input price."""
        if self.pricing is None:
            return None
        per_input, per_output, per_cached = self.pricing
        prompt = usage["prompt_tokens"]
        cached = min(usage.get("cached_tokens", 0), prompt)
        return (prompt - cached) * per_input + cached * per_cached + usage["completion_tokens"] * per_output

    def compile(self, base: list[Filter], env: BuildEnv) -> None:
        """This model's chain: the front door's filters, then its own (which run once the
        model is known, so none may sit before ROUTE)."""
        own = build(self.spec.get("filters") or [], env)
        if self.spec.get("waf"):
            own.insert(0, WafFilter(self.spec["waf"]))
        rules = self.spec.get("transform")
        if rules:
            own.insert(0, TransformFilter(transform=Transform(rules)))
        for f in own:
            if f.phase <= Phase.ROUTE:
                raise ValueError(f"model {self.name!r}: filter {f.name!r} runs before the model is known "
                                 f"(phase {f.phase.name}); put it on the front door's chain")
        self.filters = own
        self.chain = Chain([*base, *own])

    def targets(self, requested: str) -> list[dict[str, str]]:
        """The chain for a requested name; a target's ``*`` takes what the public ``*`` matched."""
        if "*" not in self.name:
            return self.target_chain
        prefix, _, suffix = self.name.partition("*")
        matched = requested[len(prefix) : len(requested) - len(suffix)]
        return [{**t, "model": t["model"].replace("*", matched)} for t in self.target_chain]


class ModelTable:
    """Exact names first, then wildcards in config order (deterministic, unlike a hash map)."""

    def __init__(self, models: list[dict[str, Any]]) -> None:
        entries = [ModelEntry(m) for m in models]
        self.exact = {e.name: e for e in entries if "*" not in e.name}
        self.patterns = [e for e in entries if "*" in e.name]
        self.names = [e.name for e in entries]

    def resolve(self, name: str) -> ModelEntry | None:
        entry = self.exact.get(name)
        if entry is not None:
            return entry
        for entry in self.patterns:
            if fnmatch.fnmatchcase(name, entry.name):
                return entry
        return None


class ProviderRuntime:
    """How to reach one configured provider, under this generation's settings."""

    __slots__ = (
        "name",
        "type",
        "adapter",
        "mock",
        "pool",
        "host_header",
        "keys",
        "timeouts",
        "key_cooldown",
        "health_check",
        "pass_headers",
        "_health",
        "_breaker_failures",
        "_breaker_cooldown",
        "_secrets",
    )

    def __init__(self, spec: dict[str, Any], pools: PoolSet, health: ProviderHealth) -> None:
        self.name = spec["name"]
        self.type = spec["type"]
        if self.type == "mock":
            # The in-process mock speaks OpenAI: the OpenAI adapter builds its calls.
            self.adapter: Adapter = adapter_for({**spec, "type": "openai", "base_url": None})
            self.mock: MockLLM | None = MockLLM(
                **{k: v for k, v in spec["options"].items() if k in MOCK_OPTIONS}
            )
            self.pool = None
            self.host_header = b""
        else:
            self.adapter = adapter_for(spec)
            self.mock = None
            adapter = self.adapter
            self.pool = pools.get(adapter.scheme, adapter.host, adapter.port, 1024, spec["timeouts"]["idle"])
            default_port = 443 if adapter.scheme == "https" else 80
            host = adapter.host if ":" not in adapter.host else f"[{adapter.host}]"
            self.host_header = (host if adapter.port == default_port else f"{host}:{adapter.port}").encode()
        self.keys: KeyPool = health.key_pool(self.name, spec["api_keys"])
        self.timeouts = spec["timeouts"]
        self.key_cooldown = spec["key_cooldown"]
        self.health_check = spec["health_check"]
        self.pass_headers = tuple(name.encode() for name in spec.get("pass_headers", ()))
        self._health = health
        self._breaker_failures = spec["breaker"]["failures"]
        self._breaker_cooldown = spec["breaker"]["cooldown"]
        self._secrets = secret_values({"providers": [spec]})  # keys, option headers, URL credentials

    def breaker(self, model: str) -> Breaker:
        return self._health.breaker(self.name, model, self._breaker_failures, self._breaker_cooldown)

    def redact(self, text: str) -> str:
        """Provider error texts may quote the key they refused; clients must never see one."""
        return scrub(text, self._secrets)

    def probed_down(self) -> bool:
        return self.name in self._health.probed_down

    def probed(self, healthy: bool) -> None:
        """An active probe's verdict: down skips the provider; up closes its open breakers."""
        self._health.probes[self.name] = (healthy, time.time())
        if healthy:
            self._health.probed_down.discard(self.name)
            for (provider, _), breaker in self._health.breakers().items():
                if provider == self.name:
                    breaker.success()
        else:
            self._health.probed_down.add(self.name)


class AIFrontDoor:
    def __init__(self, config: dict[str, Any], resources: Resources, env: BuildEnv) -> None:
        self.models = ModelTable(config["models"])
        self.created = int(time.time())  # the "created" of every model the gateway lists
        self.providers = {
            p["name"]: ProviderRuntime(p, resources.pools, resources.health) for p in config["providers"]
        }
        authenticator = env.authenticator
        base: list[Filter] = [Observe(), Auth(env=env, anonymous=True), Decode()]
        if env.trace is not None:
            base.append(env.trace)
        if config["http"]["overload"]:
            base.append(Overload(config["http"]["overload"], config["consumers"]))
        spec = config["prompts"]
        if spec["templates"] or spec["decorators"]:
            base.append(PromptsFilter(Prompts(spec)))
        base.append(RouteModel(self.models, authenticator))
        guard = env.guard
        if guard is not None:
            rules = config["guard"]["rules"]
            base.append(GuardFilter(guard, prompts=any("prompt" in r["apply_to"] for r in rules),
                                    answers=any("response" in r["apply_to"] for r in rules)))
        if config["cache"]:
            store, index = resources.cache_for(config["cache"], config["redis"])
            base.append(CacheFilter(config["cache"], store, index))
        if env.limiter is not None:
            base.append(RateLimit(limiter=env.limiter))
        base.append(Usage())
        self.chain = Chain(base)
        for entry in (*self.models.exact.values(), *self.models.patterns):
            entry.compile(base, env)

    def handles(self, path: bytes) -> bool:
        return path in PATHS or path.startswith(MODEL_PREFIX)

    def start(self, s: Stream) -> ModelHandler:
        head = s.head
        op, dialect = PATHS.get(head.path) or ("model", OPENAI)
        if op in ("models", "model") and head.get(b"anthropic-version") is not None:
            dialect = ANTHROPIC
        s.op = op
        return ModelHandler(self, s, op, dialect)
