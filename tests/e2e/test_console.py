"""The web console in a real headless browser (Debian's chromium driven by Playwright).

The page and uPlot come from the admin plane only (no CDN); after traffic the charts must
hold non-zero rates and have drawn pixels, the worker table must show every worker and its
generation, and the browser must have logged no error. A screenshot is saved with the run.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from playwright.sync_api import sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fault_provider import FaultProvider, Recorded, Reply, openai_completion, openai_error
from tests.support.gateway import free_port, http_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

STACKED = """((name, labels) => labels.every(label => {
  const stack = stacks[name];
  const i = stack.key === null ? -1 : stack.key.split("\\u0000").indexOf(label);
  return i >= 0 && stack.raw[i].some(v => v > 0);
}))"""
"""A stacked chart shows each of ``labels`` with a non-zero value somewhere."""
HEALTH = "[...document.querySelectorAll('#health tbody tr')].map(r => [...r.cells].map(c => c.textContent))"

DRAWN_PIXELS = """(id) => {
  const canvas = document.querySelector(`#${id} canvas`);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) drawn++;
  return drawn;
}"""


def console_config(plain_upstream: str, keyed_provider: str) -> dict:
    """Three consumers, two priced models on two mock providers, a model whose first provider is
    down (its breaker opens), one whose first key is refused (it cools down), two probed
    providers (one up, one down), a tight limit for one consumer, a cache and a plain route."""
    return {
        "consumers": [{"name": name, "api_keys": [f"key-{name}"]} for name in ("team-a", "team-b", "team-c")],
        "providers": [
            {"name": "mock", "type": "mock", "options": {"chunks": 4, "chunk_delay_ms": 5}},
            {"name": "mock-b", "type": "mock"},
            {"name": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "api_keys": ["k"]},
            {"name": "keyed", "type": "openai", "base_url": keyed_provider + "/v1",
             "api_keys": ["revoked-key-000", "good-key-0000"]},
            # Probed only (no model uses them): one answers its model list, one is not there.
            {"name": "probed-up", "type": "openai", "base_url": keyed_provider + "/v1", "api_keys": ["good-key-0001"],
             "health_check": {"interval": "1s", "timeout": "1s"}},
            {"name": "probed-down", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
             "api_keys": ["k"], "health_check": {"interval": "1s", "timeout": "1s"}},
        ],
        "models": [
            {"name": "chat-a", "targets": [{"provider": "mock"}],
             "pricing": {"input_per_mtok": 2.5, "output_per_mtok": 10, "cached_input_per_mtok": 1.25}},
            {"name": "chat-b", "targets": [{"provider": "mock-b"}], "pricing": {"input_per_mtok": 1, "output_per_mtok": 4}},
            {"name": "flaky", "targets": [{"provider": "dead"}, {"provider": "mock"}]},
            {"name": "keyed", "targets": [{"provider": "keyed", "model": "gpt-4o-mini"}]},
        ],
        "limits": [{"name": "team-c-rps", "match": {"consumers": ["team-c"]}, "requests": {"per_second": 2}}],
        "cache": {"store": "memory"},
        "routes": [
            {"name": "plain", "match": {"path": {"prefix": "/plain"}}, "upstream": plain_upstream},
            {"name": "legacy", "match": {"path": {"prefix": "/legacy"}}, "upstream": f"http://127.0.0.1:{free_port()}"},
        ],
    }


def keyed_reply(request: Recorded) -> Reply:
    """OpenAI's answers (platform.openai.com/docs/api-reference): 401 invalid_api_key for the
    revoked key, a chat completion for the other."""
    if "revoked" in request.headers.get("authorization", ""):
        return Reply(401, openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
    return Reply(200, openai_completion("keyed answer"))


def traffic(gw_url: str, stop: threading.Event) -> None:
    """Each consumer asks both priced models, plain and streamed (TTFT), plus repeated questions
    (cache hits), the flaky and keyed models, and a plain route; team-c runs into its limit."""
    clients = {name: openai.OpenAI(base_url=gw_url + "/v1", api_key=f"key-{name}", max_retries=0)
               for name in ("team-a", "team-b", "team-c")}
    n = 0
    while not stop.is_set():
        n += 1
        for name, client in clients.items():
            for model in ("chat-a", "chat-b"):
                try:
                    client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"q{n} {name}"}])
                    for _ in client.chat.completions.create(
                            model=model, stream=True, messages=[{"role": "user", "content": f"s{n} {name}"}]):
                        pass
                    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "same question"}])
                except openai.RateLimitError:
                    pass  # team-c's limit
        try:
            clients["team-a"].chat.completions.create(model="flaky", messages=[{"role": "user", "content": f"f{n}"}])
            clients["team-b"].chat.completions.create(model="keyed", messages=[{"role": "user", "content": f"k{n}"}])
        except openai.APIError:
            pass
        http_json("GET", gw_url + "/plain/ok")
        time.sleep(0.05)


def test_console_charts_health_and_explained_errors_after_real_traffic(gateway, tmp_path: Path) -> None:
    plain, keyed = FaultProvider(), FaultProvider()
    plain.script(Reply(200, {"ok": True}))
    keyed.script(keyed_reply)
    gw = gateway(console_config(plain.url, keyed.url), workers=2)
    stop = threading.Event()
    load = threading.Thread(target=traffic, args=(gw.url, stop), daemon=True)
    load.start()
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(gw.admin + "/ui")
            page.wait_for_function("() => charts.requests.data[0].length >= 20", timeout=60_000)  # 20 s of samples
            for ready in (
                "charts.requests.data[1].some(v => v > 0)",
                "charts.latency.data[3].some(v => v > 0)",  # p99
                "charts.ttft.data[1].some(v => v > 0)",
                "charts.plain_latency.data[2].some(v => v > 0)",
                "charts.cache.data[1].some(v => v > 0) && charts.cache.data[2].some(v => v > 0)",
                f"{STACKED}('tokens_in', ['team-a', 'team-b', 'team-c'])",
                f"{STACKED}('tokens_out', ['team-a', 'team-b', 'team-c'])",
                f"{STACKED}('cost', ['team-a', 'team-b', 'team-c'])",
                f"{STACKED}('rejections', ['team-c-rps'])",
            ):
                page.wait_for_function(f"() => {ready}", timeout=40_000)
            for chart in ("requests", "latency", "ttft", "plain-latency", "tokens-in", "tokens-out", "cost",
                          "rejections", "cache"):
                assert page.evaluate(DRAWN_PIXELS, f"chart-{chart}") > 500, chart
            page.wait_for_function("() => document.querySelectorAll('#workers tbody tr').length === 2")
            rows = page.eval_on_selector_all("#workers tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            assert [row[2] for row in rows] == ["ready", "ready"] and [row[3] for row in rows] == ["1", "1"]
            assert page.text_content("#generation") == "1"
            # Provider health: the dead provider's breaker opened, the revoked key cools down.
            page.wait_for_function(f"() => {HEALTH}.some(r => r[1] === 'dead' && r[2] === 'breaker (flaky)' && r[3] === 'open')",
                                   timeout=30_000)
            page.wait_for_function(f"() => {HEALTH}.some(r => r[1] === 'keyed' && r[2] === 'keys' && r[3] === '1/2 usable'"
                                   " && r[4].startsWith('#0 refused'))", timeout=30_000)
            page.wait_for_function(f"() => {HEALTH}.some(r => r[1] === 'probed-up' && r[2] === 'probe' && r[3] === 'up')"
                                   f" && {HEALTH}.some(r => r[1] === 'probed-down' && r[2] === 'probe' && r[3] === 'down')")
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            # The same charts broken down by model, then by provider (cost: only the priced ones).
            page.select_option("#dimension", "model")
            page.wait_for_function(f"() => {STACKED}('tokens_in', ['chat-a', 'chat-b', 'flaky', 'keyed'])"
                                   f" && {STACKED}('cost', ['chat-a', 'chat-b'])")
            page.select_option("#dimension", "provider")
            page.wait_for_function(f"() => {STACKED}('tokens_out', ['mock', 'mock-b', 'keyed'])"
                                   f" && {STACKED}('cost', ['mock', 'mock-b'])")
            assert page.evaluate("() => stacks.cost.key.split('\\u0000')").count("dead") == 0
            page.screenshot(path=str(tmp_path / "console-by-provider.png"), full_page=True)

            status, _ = http_json("GET", gw.url + "/legacy/report")  # a plain upstream that is down
            assert status == 502
            page.click("text=recent errors, explained")
            page.wait_for_function("() => [...document.querySelectorAll('#causes td')]"
                                   ".some(td => td.textContent === 'upstream_unavailable')", timeout=20_000)
            request_id = page.eval_on_selector_all(
                "#causes tbody tr", "rows => rows.find(r => r.cells[1].textContent === 'upstream_unavailable')"
                ".querySelector('td.id').textContent")
            page.fill("#request-id", request_id)
            page.click("#lookup")
            page.wait_for_function("() => document.getElementById('one').textContent.includes(\"route 'legacy'\")")
            page.screenshot(path=str(tmp_path / "console-errors.png"), full_page=True)
            browser.close()
        stop.set()
        load.join(timeout=20)
        # The cost charted is models[].pricing applied to each call's tokens (the mock caches nothing).
        time.sleep(1.5)  # the workers' last snapshots
        found = {(x.name, tuple(sorted(x.labels.items()))): x.value
                 for f in text_string_to_metric_families(_metrics(gw.admin)) for x in f.samples}
        for model, (per_in, per_out) in {"chat-a": (2.5, 10.0), "chat-b": (1.0, 4.0)}.items():
            labels = (("consumer", "team-a"), ("model", model), ("provider", "mock" if model == "chat-a" else "mock-b"))
            tokens_in = found[("fastgw_tokens_total", tuple(sorted((*labels, ("direction", "prompt")))))]
            tokens_out = found[("fastgw_tokens_total", tuple(sorted((*labels, ("direction", "completion")))))]
            assert found[("fastgw_cost_total", labels)] == pytest.approx((tokens_in * per_in + tokens_out * per_out) / 1e6)
        assert not any(name == "fastgw_cost_total" and ("model", "flaky") in labels for name, labels in found)
    finally:
        stop.set()
        load.join(timeout=20)
        gw.stop()  # before the providers, so no connection to them is left open
        plain.close()
        keyed.close()
    assert problems == []
    assert all(url.startswith(gw.admin) for url in urls), urls  # nothing from a CDN or the internet
    assert (tmp_path / "console.png").stat().st_size > 10_000
    assert (tmp_path / "console-errors.png").stat().st_size > 5_000


TOKEN = "console-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FIRST_SECRET, SECOND_SECRET = "sk-first-secret-0123456789", "sk-second-secret-0123456789"


def test_config_page_lists_generations_diffs_them_and_rolls_back(gateway, tmp_path: Path) -> None:
    """Behind an admin token: the pages load, the first data call asks for the token once
    (a prompt; kept for the tab, sent as a bearer header), the diff of a push shows the changed
    key (and only says that a secret changed), and the rollback POST carries the token."""
    unused = f"http://127.0.0.1:{free_port()}/v1"
    first = {"providers": [{"name": "mock", "type": "mock"},
                           {"name": "spare", "type": "openai", "base_url": unused, "api_keys": [FIRST_SECRET]}],
             "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}]}
    gw = gateway(first, workers=2, admin_token=TOKEN)
    assert http_json("GET", gw.admin + "/config/history")[0] == 401  # the data needs the token
    second = {"providers": [first["providers"][0], {**first["providers"][1], "api_keys": [SECOND_SECRET]}],
              "models": [{"name": "mock-gpt-2", "targets": [{"provider": "mock"}]}]}
    assert gw.push(second)[0] == 200
    gw.wait_ready(2, generation=2)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        prompts: list[str] = []
        page.on("dialog", lambda d: (prompts.append(d.message), d.accept(TOKEN)))
        page.goto(gw.admin + "/ui")
        page.click("text=config generations")
        page.wait_for_function("() => document.querySelectorAll('#history tbody tr').length === 2")
        rows = page.eval_on_selector_all("#history tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        assert [row[0] for row in rows] == ["2", "1"]
        assert rows[0][2] == "POST /config" and rows[0][3] == "models, providers" and rows[1][3] == "(first)"
        # The diff from 1 to 2 is shown at once: the renamed model side by side, the key only as "changed".
        page.wait_for_function("() => document.getElementById('diff-summary').textContent.includes('generation 1 → 2')")
        assert "secrets changed (not shown)" in page.text_content("#diff-summary")
        removed = page.eval_on_selector_all("#diff td.del", "cells => cells.map(c => c.textContent.trim())")
        added = page.eval_on_selector_all("#diff td.add", "cells => cells.map(c => c.textContent.trim())")
        assert "name: mock-gpt" in removed and "name: mock-gpt-2" in added, (removed, added)
        html = page.content()
        assert FIRST_SECRET not in html and SECOND_SECRET not in html
        page.screenshot(path=str(tmp_path / "console-config.png"), full_page=True)
        page.click("#rollback")
        page.wait_for_function("() => document.getElementById('result').textContent.includes('restores generation 1')")
        page.wait_for_function("() => document.getElementById('generation').textContent === '3'")
        # The rollback is a new generation whose diff undoes the push.
        page.wait_for_function("() => document.getElementById('diff-summary').textContent.includes('generation 2 → 3')")
        added = page.eval_on_selector_all("#diff td.add", "cells => cells.map(c => c.textContent.trim())")
        assert "name: mock-gpt" in added
        page.select_option("#from", "1")
        page.select_option("#to", "3")
        page.click("#compare")
        page.wait_for_function("() => document.getElementById('diff-summary').textContent.includes('(identical)')")
        page.screenshot(path=str(tmp_path / "console-config-rolled-back.png"), full_page=True)
        browser.close()
    assert len(prompts) == 1 and "token" in prompts[0]
    assert [p for p in problems if "401" not in p] == []  # the one 401 before the prompt is expected
    gw.wait_ready(2, generation=3)
    status, config = http_json("GET", gw.admin + "/config", headers=AUTH)
    assert [m["name"] for m in config["models"]] == ["mock-gpt"]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    assert client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}]).choices
    status, history = http_json("GET", gw.admin + "/config/history", headers=AUTH)
    assert [(h["generation"], h["source"]) for h in history["history"]][1:] == [
        (2, "POST /config"), (3, "rollback to generation 1")]
    status, diff = http_json("GET", gw.admin + "/config/diff?from=1&to=2", headers=AUTH)
    assert status == 200 and "+  name: mock-gpt-2" in diff["diff"] and diff["secrets_changed"] is True
    assert FIRST_SECRET not in str(diff) and SECOND_SECRET not in str(diff)
    assert http_json("GET", gw.admin + "/config/diff?from=7&to=2", headers=AUTH)[0] == 404
    assert http_json("GET", gw.admin + "/config/diff?from=x", headers=AUTH)[0] == 400


SUMMARY = "The upstream of route 'legacy' refuses connections; start it or fix routes[].upstream."


def test_a_configured_model_summarises_a_group_of_errors_through_the_front_door(gateway, tmp_path: Path) -> None:
    """``console.summarise``: the admin plane asks this gateway's own front door, as the consumer
    whose key it holds; the fake provider (OpenAI's chat completion, from its API reference) sees
    the group's diagnosis, and the console shows the answer."""
    writer = FaultProvider()
    writer.script(Reply(200, openai_completion(SUMMARY)))
    config = {
        "consumers": [{"name": "ops", "api_keys": ["ops-console-key-0123"]}],
        "providers": [{"name": "writer", "type": "openai", "base_url": writer.url + "/v1",
                       "api_keys": ["sk-writer-0123456789"]}],
        "models": [{"name": "summariser", "targets": [{"provider": "writer", "model": "gpt-4o-mini"}]}],
        "routes": [{"name": "legacy", "match": {"path": {"prefix": "/legacy"}},
                    "upstream": f"http://127.0.0.1:{free_port()}"}],
        "console": {"summarise": {"model": "summariser", "api_key": "ops-console-key-0123"}},
    }
    gw = gateway(config, workers=2)
    try:
        for _ in range(3):
            assert http_json("GET", gw.url + "/legacy/report")[0] == 502
        deadline = time.monotonic() + 10
        while http_json("GET", gw.admin + "/diagnose")[1]["failures"] < 3:  # published on the workers' tick
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert post_json(gw.admin + "/diagnose/summary", {"cause": "nothing_like_it"})[0] == 404
        assert post_json(gw.admin + "/diagnose/summary", {"no": "cause"})[0] == 400
        status, body = post_json(gw.admin + "/diagnose/summary", {"cause": "upstream_unavailable"})
        assert status == 200, body
        assert body == {"cause": "upstream_unavailable", "count": 3, "model": "summariser", "summary": SUMMARY}
        asked = writer.requests[-1]
        assert asked.path == "/v1/chat/completions" and asked.headers["authorization"] == "Bearer sk-writer-0123456789"
        sent = asked.json()
        assert sent["model"] == "gpt-4o-mini" and sent["messages"][0]["role"] == "system"
        group = json.loads(sent["messages"][1]["content"])
        assert group["cause"] == "upstream_unavailable" and group["count"] == 3
        assert "route 'legacy'" in group["diagnosis"] and len(group["examples"]) == 3
        problems: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 600})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.goto(gw.admin + "/ui/errors")
            page.click("#causes button.summarise")
            page.wait_for_function("() => document.getElementById('summary').textContent.includes('by summariser')")
            assert SUMMARY in page.text_content("#summary")
            page.screenshot(path=str(tmp_path / "console-errors-summary.png"), full_page=True)
            browser.close()
        assert problems == []
        # The summary was a front-door request like any other: the consumer's, metered.
        deadline = time.monotonic() + 10
        while 'consumer="ops",model="summariser",provider="writer",status="200"' not in _metrics(gw.admin):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        gw.stop()
        writer.close()


def test_without_console_summarise_there_is_no_summary(gateway) -> None:
    gw = gateway({"providers": [{"name": "mock", "type": "mock"}],
                  "models": [{"name": "m", "targets": [{"provider": "mock"}]}]}, workers=1)
    status, body = post_json(gw.admin + "/diagnose/summary", {"cause": "anything"})
    assert status == 404 and body["error"]["type"] == "not_configured"
    assert http_json("GET", gw.admin + "/diagnose")[1]["summarise"] is False


def post_json(url: str, payload: dict) -> tuple[int, dict]:
    return http_json("POST", url, json.dumps(payload).encode(), timeout=30,
                     headers={"content-type": "application/json"})


def _metrics(admin: str) -> str:
    return urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
