"""Config for ``compression``: defaults, per-route and per-model overrides, and errors with field paths."""

from __future__ import annotations

import json

import pytest

from fastgw.config import ConfigError, load_text
from fastgw.http.encoding import Compression

MODELS = [{"name": "gpt-4o-mini", "targets": [{"provider": "m"}]}]


def load(**top) -> dict:
    return load_text(json.dumps({"providers": [{"name": "m", "type": "mock"}], "models": MODELS} | top), env={})


def errors(**top) -> str:
    with pytest.raises(ConfigError) as err:
        load(**top)
    return str(err.value)


def test_off_when_absent_and_defaults_when_true():
    config = load(routes=[{"upstream": "http://127.0.0.1:1"}])
    assert config["compression"] is None and config["routes"][0]["compression"] is None
    assert config["models"][0]["compression"] is None
    on = load(compression=True)["compression"]
    assert on == {"algorithms": ["zstd", "br", "gzip"], "min_size": 1024,
                  "types": ["application/json", "text/event-stream", "text/*"],
                  "levels": {"zstd": 3, "br": 4, "gzip": 5}}


def test_routes_and_models_inherit_and_override_key_by_key():
    config = load(
        compression={"algorithms": ["gzip", "zstd"], "min_size": "2k", "levels": {"gzip": 6}},
        routes=[{"name": "a", "upstream": "http://127.0.0.1:1"},
                {"name": "b", "upstream": "http://127.0.0.1:1", "compression": {"min_size": 0, "types": ["Text/*"]}},
                {"name": "c", "upstream": "http://127.0.0.1:1", "compression": False}],
        models=[{"name": "x", "targets": [{"provider": "m"}], "compression": {"levels": {"zstd": 19}}}],
    )
    top = config["compression"]
    assert top["algorithms"] == ["gzip", "zstd"] and top["min_size"] == 2048 and top["levels"]["gzip"] == 6
    a, b, c = config["routes"]
    assert a["compression"] == top
    assert b["compression"]["min_size"] == 0 and b["compression"]["types"] == ["text/*"]
    assert b["compression"]["algorithms"] == ["gzip", "zstd"]
    assert c["compression"] is None
    assert config["models"][0]["compression"]["levels"] == {"zstd": 19, "br": 4, "gzip": 6}
    assert load(routes=[{"upstream": "http://127.0.0.1:1", "compression": {"min_size": 10}}])["routes"][0][
        "compression"]["algorithms"] == ["zstd", "br", "gzip"]  # no top level: the defaults


def test_every_error_has_its_field_path():
    text = errors(
        compression={"algorithms": ["zstd", "lz4", "zstd"], "min_size": "lots", "types": ["json", 3, "*/json"],
                     "levels": {"gzip": 10, "br": "x", "lzma": 1}, "level": 3},
        routes=[{"upstream": "http://127.0.0.1:1", "compression": {"algorithms": []}}],
        models=[{"name": "x", "targets": [{"provider": "m"}], "compression": "fast"}],
    )
    for expected in (
        "compression.algorithms[1]: expected one of zstd, br, gzip; found string 'lz4'",
        "compression.algorithms[2]: zstd is listed twice",
        "compression.min_size: expected a size",
        "compression.types[0]: expected a media type",
        "compression.types[1]: expected a media type",
        "compression.types[2]: expected a media type",
        "compression.levels.gzip: expected an integer between 1 and 9; found integer 10",
        "compression.levels.br: expected an integer between 0 and 11",
        "compression.levels.lzma: unknown key",
        "compression.level: unknown key; did you mean 'levels'?",
        "routes[0].compression.algorithms: at least one algorithm is required",
        "models[0].compression: expected a mapping, found string 'fast'",
    ):
        assert expected in text, (expected, text)


def test_media_types_match_exactly_by_family_and_ignore_parameters():
    policy = Compression({"algorithms": ["gzip"], "min_size": 0, "types": ["application/json", "text/*"],
                          "levels": {"gzip": 5}})
    assert policy.matches(b"application/json; charset=utf-8")
    assert policy.matches(b"Text/Event-Stream")
    assert not policy.matches(b"application/jsonx")
    assert not policy.matches(b"image/png")
    assert not policy.matches(None)
    everything = Compression({"algorithms": ["gzip"], "min_size": 0, "types": ["*/*"], "levels": {"gzip": 5}})
    assert everything.matches(b"image/png")
