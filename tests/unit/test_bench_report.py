"""bench/report.py draws a saved run (a trimmed real bench JSON) without running the bench."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from report import main, percentiles, write_report  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "bench-results.json"


def test_plots_and_markdown_are_written_beside_the_json(tmp_path: Path) -> None:
    saved = tmp_path / "20261203T141454Z.json"
    shutil.copy(FIXTURE, saved)
    written = write_report(saved)
    assert set(written) == {"throughput", "CPU per request", "latency", "markdown"}
    for name in ("throughput", "CPU per request", "latency"):
        path = written[name]
        assert path.parent == tmp_path and path.name.startswith("20261203T141454Z-") and path.suffix == ".png"
        with Image.open(path) as image:
            image.verify()  # a whole, valid PNG
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 10  # something was drawn, not a blank canvas
    text = written["markdown"].read_text()
    assert text.startswith("# fastgw bench, ")
    for scenario in ("json", "ai-json", "ai-sse"):
        assert f"| {scenario} |" in text
    assert "![throughput](20261203T141454Z-throughput.png)" in text and "![latency](20261203T141454Z-latency.png)" in text


def test_latency_comes_from_wrk_raw_output_or_the_table() -> None:
    report = json.loads(FIXTURE.read_text())
    row = report["table"][0]
    found = percentiles(report, row, "fastgw")
    assert list(found) == [50, 75, 90, 99] and found[50] == row["fastgw_p50_ms"]
    report["results"] = {}
    assert percentiles(report, row, "fastgw") == {50: row["fastgw_p50_ms"], 99: row["fastgw_p99_ms"]}


def test_the_command_line_refuses_a_file_without_rows(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"table": []}')
    try:
        main([str(empty)])
    except SystemExit as exc:
        assert "no scenario rows" in str(exc.code)
    else:
        raise AssertionError("expected an exit")
