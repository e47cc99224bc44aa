"""The web console in a real headless browser (Debian's chromium driven by Playwright).

The page and uPlot come from the admin plane only (no CDN); after traffic the charts must
hold non-zero rates and have drawn pixels, the worker table must show every worker and its
generation, and the browser must have logged no error. A screenshot is saved with the run.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import openai
from playwright.sync_api import sync_playwright

from tests.support.gateway import free_port, http_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

DRAWN_PIXELS = """(id) => {
  const canvas = document.querySelector(`#${id} canvas`);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) drawn++;
  return drawn;
}"""


def test_console_shows_live_rates_tokens_workers_and_explained_errors(gateway, tmp_path: Path) -> None:
    gw = gateway({"providers": [{"name": "mock", "type": "mock"}],
                  "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
                  "routes": [{"name": "legacy", "match": {"path": {"prefix": "/legacy"}},
                              "upstream": f"http://127.0.0.1:{free_port()}"}]}, workers=2)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hello there"}])
            time.sleep(0.02)

    load = threading.Thread(target=traffic, daemon=True)
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
            page.wait_for_function("() => requests.data[1].some(v => v > 0) && tokens.data[2].some(v => v > 0)",
                                   timeout=30_000)
            assert page.evaluate(DRAWN_PIXELS, "chart-requests") > 500
            assert page.evaluate(DRAWN_PIXELS, "chart-tokens") > 500
            page.wait_for_function("() => document.querySelectorAll('#workers tbody tr').length === 2")
            rows = page.eval_on_selector_all("#workers tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            assert [row[2] for row in rows] == ["ready", "ready"] and [row[3] for row in rows] == ["1", "1"]
            assert page.text_content("#generation") == "1"
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

            status, _ = http_json("GET", gw.url + "/legacy/report")  # a plain upstream that is down
            assert status == 502
            page.click("text=recent errors, explained")
            page.wait_for_function("() => [...document.querySelectorAll('#causes td')]"
                                   ".some(td => td.textContent === 'upstream_unavailable')", timeout=20_000)
            request_id = page.text_content("#causes tbody tr td.id")
            page.fill("#request-id", request_id)
            page.click("#lookup")
            page.wait_for_function("() => document.getElementById('one').textContent.includes(\"route 'legacy'\")")
            page.screenshot(path=str(tmp_path / "console-errors.png"), full_page=True)
            browser.close()
    finally:
        stop.set()
        load.join(timeout=10)
    assert problems == []
    assert all(url.startswith(gw.admin) for url in urls), urls  # nothing from a CDN or the internet
    assert (tmp_path / "console.png").stat().st_size > 10_000
    assert (tmp_path / "console-errors.png").stat().st_size > 5_000


TOKEN = "console-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_config_page_lists_generations_and_rolls_back(gateway, tmp_path: Path) -> None:
    """Behind an admin token: the pages load, the first data call asks for the token once
    (a prompt; kept for the tab, sent as a bearer header), and the rollback POST carries it."""
    first = {"providers": [{"name": "mock", "type": "mock"}],
             "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}]}
    gw = gateway(first, workers=2, admin_token=TOKEN)
    assert http_json("GET", gw.admin + "/config/history")[0] == 401  # the data needs the token
    second = {**first, "models": [{"name": "mock-gpt-2", "targets": [{"provider": "mock"}]}]}
    assert gw.push(second)[0] == 200
    gw.wait_ready(2, generation=2)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 600})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        prompts: list[str] = []
        page.on("dialog", lambda d: (prompts.append(d.message), d.accept(TOKEN)))
        page.goto(gw.admin + "/ui")
        page.click("text=config generations")
        page.wait_for_function("() => document.querySelectorAll('#history tbody tr').length === 2")
        rows = page.eval_on_selector_all("#history tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        assert [row[0] for row in rows] == ["2", "1"]
        assert rows[0][2] == "POST /config" and rows[0][3] == "models" and rows[1][3] == "(first)"
        page.click("#rollback")
        page.wait_for_function("() => document.getElementById('result').textContent.includes('restores generation 1')")
        page.wait_for_function("() => document.getElementById('generation').textContent === '3'")
        page.screenshot(path=str(tmp_path / "console-config.png"), full_page=True)
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
