"""A push is all or nothing: a config that validates but cannot be built changes nothing anywhere.

The supervisor builds each pushed generation in a child forked like a worker before it
publishes it, and answers 200 only once every live worker has loaded it. The failures are
real: plugin modules that fail on import or in some processes only, and numpy made broken
or missing in the gateway's processes by a ``sitecustomize`` on their ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import ROOT, Gateway, MockLLMProcess, RawClient, http_json

BROKEN_ON_IMPORT = '''
raise RuntimeError("broken_plugin cannot load its model file")
'''

# Each build of the filter takes the next numbered marker file; builds past ``allowed`` fail.
# The trial build is the first one, so allowed: 1 fails in every worker, 2 in one of two.
FAILS_AFTER_N_BUILDS = '''
import os

from fastgw.filters import Filter, Phase


class Flaky(Filter):
    name = "flaky"
    phase = Phase.POLICY

    def __init__(self, options=None, env=None):
        super().__init__(options, env)
        for i in range(100):
            try:
                os.close(os.open(os.path.join(self.options["dir"], f"build-{i}"), os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                continue
        if i >= self.options["allowed"]:
            raise RuntimeError(f"flaky filter: build {i} refused in pid {os.getpid()}")
'''

NUMPY_BLOCKER = '''
import importlib.abc
import importlib.machinery
import os
import sys

MODE = os.environ.get("FASTGW_TEST_NUMPY")


class _Numpy(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """numpy as this process sees it: "missing" (not found at all) or "broken" (found, fails to import,
    as a numpy built for another Python does)."""

    def find_spec(self, name, path=None, target=None):
        if name != "numpy" and not name.startswith("numpy."):
            return None
        if MODE == "missing":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("numpy: C extensions failed to import (built for another Python)", name="numpy")


if MODE:
    sys.meta_path.insert(0, _Numpy())
'''


@pytest.fixture(scope="module")
def upstream():
    mock = MockLLMProcess()
    yield mock
    mock.stop()


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, str]:
    """A directory with the plugin modules and the sitecustomize, as the gateway's extra environment."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "broken_plugin.py").write_text(BROKEN_ON_IMPORT)
    (folder / "flaky_plugin.py").write_text(FAILS_AFTER_N_BUILDS)
    (folder / "sitecustomize.py").write_text(NUMPY_BLOCKER)
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")])}


def marked(upstream: MockLLMProcess, marker: str, **extra: object) -> dict:
    """Routes whose /echo answer names ``marker`` (as the Host the upstream saw): which generation served."""
    echo = {"name": "echo", "match": {"path": "/echo"}, "upstream": {"endpoints": [upstream.url], "host_header": marker}}
    return {"routes": [{**echo, **extra}, {"name": "default", "match": {"path": "/"}, "upstream": upstream.url}]}


def served_marker(port: int) -> str:
    c = RawClient(port)
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, body = c.read_response()
    c.close()
    return {k.lower(): v for k, v in json.loads(body)["headers"]}["host"]


def live_config(gw: Gateway) -> tuple[str, dict]:
    import urllib.request

    request = urllib.request.Request(gw.admin + "/config", headers=gw.admin_headers())
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["X-Fastgw-Generation"], json.loads(response.read())


def assert_nothing_changed(gw: Gateway, before: tuple[str, dict], generation: int = 1) -> dict:
    status = gw.status()
    assert status["generation"] == generation
    assert [w["generation"] for w in status["workers"]] == [generation] * len(status["workers"]), status
    assert live_config(gw) == before
    assert {served_marker(gw.port) for _ in range(8)} == {"gen-1"}  # every worker, old rules
    return status


def test_a_plugin_that_fails_on_import_is_refused_before_any_worker_sees_it(
    tmp_path: Path, upstream, plugins: dict[str, str]
) -> None:
    gw = Gateway(marked(upstream, "gen-1"), tmp_path, env=plugins)
    try:
        before = live_config(gw)
        code, answer = gw.push(marked(upstream, "gen-2", filters=[{"use": "broken_plugin:Filter"}]))
        assert code == 409, answer
        reason = answer["error"]["errors"][0]
        assert "cannot build generation 2" in reason and "broken_plugin cannot load its model file" in reason
        status = assert_nothing_changed(gw, before)
        assert status["failed_generation"] == {"generation": 2, "source": "POST /config", "reason": reason}
        assert all(w["failed_generation"] is None for w in status["workers"])  # no worker even tried
        # The next good push is generation 3: a refused number is never reused.
        code, answer = gw.push(marked(upstream, "gen-3"))
        assert code == 200 and answer["generation"] == 3, answer
        assert {served_marker(gw.port) for _ in range(8)} == {"gen-3"}  # 200 means every worker has it
    finally:
        assert gw.stop() == 0
    assert "refused POST /config: cannot build generation 2" in gw.stderr_text()


@pytest.mark.parametrize("allowed", [1, 2], ids=["no-worker-loads-it", "one-of-two-loads-it"])
def test_a_generation_a_worker_cannot_load_is_rolled_back_everywhere(
    tmp_path: Path, upstream, plugins: dict[str, str], allowed: int
) -> None:
    builds = tmp_path / "builds"
    builds.mkdir()
    gw = Gateway(marked(upstream, "gen-1"), tmp_path, env=plugins, workers=2)
    try:
        before = live_config(gw)
        flaky = [{"use": "flaky_plugin:Flaky", "dir": str(builds), "allowed": allowed}]
        code, answer = gw.push(marked(upstream, "gen-2", filters=flaky))
        assert code == 500, answer
        reason = answer["error"]["errors"][0]
        assert "generation 2 was not loaded: worker" in reason and "flaky filter: build" in reason, reason
        status = assert_nothing_changed(gw, before)
        assert status["failed_generation"]["reason"] == reason
        failed = [w for w in status["workers"] if w["failed_generation"] == 2]
        assert failed and all("flaky filter" in w["load_error"] for w in failed)
        assert len(failed) == 3 - allowed  # the trial took build 0; the others went to the workers
        code, answer = gw.push(marked(upstream, "gen-3"))
        assert code == 200 and answer["generation"] == 3, answer
    finally:
        assert gw.stop() == 0


def semantic_cache(port: int) -> dict:
    """A model answered through a semantic cache (a cache is built only where models are served)."""
    return {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
        "cache": {"semantic": {"embeddings_url": f"http://127.0.0.1:{port}/v1/embeddings", "model": "e"}},
    }


def test_a_semantic_cache_with_a_broken_numpy_is_refused_by_the_trial_build(
    tmp_path: Path, upstream, plugins: dict[str, str]
) -> None:
    gw = Gateway(marked(upstream, "gen-1"), tmp_path, env=plugins | {"FASTGW_TEST_NUMPY": "broken"})
    try:
        before = live_config(gw)
        code, answer = gw.push(marked(upstream, "gen-2") | semantic_cache(upstream.port))
        assert code == 409, answer
        reason = answer["error"]["errors"][0]
        assert "ImportError: numpy: C extensions failed to import" in reason
        assert "pip install 'fastgw[semantic]'" in reason
        assert_nothing_changed(gw, before)
    finally:
        assert gw.stop() == 0


def test_check_and_push_name_the_extra_a_missing_numpy_needs(
    tmp_path: Path, upstream, plugins: dict[str, str]
) -> None:
    env = plugins | {"FASTGW_TEST_NUMPY": "missing"}
    path = tmp_path / "semantic.yaml"
    path.write_text(yaml.safe_dump(semantic_cache(upstream.port)))
    check = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert check.returncode == 1
    assert ("cache.semantic: the semantic cache (cache.semantic) needs numpy, which is not installed: "
            "pip install 'fastgw[semantic]'") in check.stderr, check.stderr
    gw = Gateway(marked(upstream, "gen-1"), tmp_path, env=env)
    try:
        code, answer = gw.push(marked(upstream, "gen-2") | semantic_cache(upstream.port))
        assert code == 400 and "pip install 'fastgw[semantic]'" in json.dumps(answer), answer
        assert gw.status()["generation"] == 1
    finally:
        assert gw.stop() == 0
    # Where numpy is installed (the test environment), the same file checks fine.
    clean = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr


def test_the_push_cli_reports_a_refused_generation(tmp_path: Path, upstream, plugins: dict[str, str]) -> None:
    gw = Gateway(marked(upstream, "gen-1"), tmp_path, env=plugins)
    try:
        path = tmp_path / "push.yaml"
        full = {k: gw.config[k] for k in ("listen", "admin", "workers")}
        path.write_text(yaml.safe_dump(full | marked(upstream, "gen-2", filters=[{"use": "broken_plugin:Filter"}])))
        result = subprocess.run([sys.executable, "-m", "fastgw", "push", "-c", str(path), "--admin", gw.admin],
                                cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **plugins})
        assert result.returncode == 1, result.stderr
        assert "rejected by the gateway (409)" in result.stderr and "broken_plugin cannot load" in result.stderr
        assert http_json("GET", gw.admin + "/status")[1]["generation"] == 1
    finally:
        assert gw.stop() == 0
