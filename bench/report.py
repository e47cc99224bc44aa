"""Pictures and a Markdown report from a saved bench run (the JSON bench/run.py writes).

Apart from the runner so a report can be rebuilt from any saved JSON without running the
bench: ``python bench/report.py bench/results/latest.json`` writes, beside the JSON,
``<stem>-throughput.png`` (req/s per scenario: direct, nginx, fastgw), ``<stem>-cpu.png``
(the proxy's CPU microseconds per request), ``<stem>-latency.png`` (wrk's latency
percentiles per scenario, nginx against fastgw) and ``<stem>.md`` (the tables, the flags
that say when a ratio means nothing, and the pictures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
from wrk import latency_percentiles  # noqa: E402

TARGETS = ("direct", "nginx", "fastgw")
COLOURS = {"direct": "#9e9e9e", "nginx": "#2e7d32", "fastgw": "#1565c0"}


def _bars(rows: list[dict], key: str, targets: tuple[str, ...], title: str, unit: str, path: Path) -> None:
    """Grouped bars: one group per scenario, one bar per target (a missing figure is left out)."""
    names = [r["scenario"] for r in rows]
    width = 0.8 / len(targets)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.2))
    for i, target in enumerate(targets):
        values = [r.get(f"{target}_{key}") for r in rows]
        xs = [j + (i - (len(targets) - 1) / 2) * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=target, color=COLOURS[target])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def percentiles(report: dict, row: dict, target: str) -> dict[int, float]:
    """wrk's latency percentiles (ms) of one target in one scenario: from its raw output when
    saved, else the p50/p99 of the table."""
    key = row.get("measurements", {}).get(target)
    result = report.get("results", {}).get(key, {}).get(target) if key else None
    raw = result.get("raw") if isinstance(result, dict) else None
    if raw:
        found = latency_percentiles(raw)
        if found:
            return dict(sorted(found.items()))
    return {p: row[f"{target}_p{p}_ms"] for p in (50, 99) if row.get(f"{target}_p{p}_ms") is not None}


def _latency(report: dict, rows: list[dict], path: Path) -> None:
    """One panel per scenario: latency against percentile, nginx and fastgw."""
    columns = min(3, max(1, len(rows)))
    lines = (len(rows) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.2 * lines), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        for target in ("nginx", "fastgw"):
            found = percentiles(report, row, target)
            if found:
                ax.plot(list(found), list(found.values()), marker="o", label=target, color=COLOURS[target])
        ax.set_title(row["scenario"], fontsize=10)
        ax.set_xlabel("percentile")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle("latency distribution (wrk)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict, rows: list[dict], images: dict[str, Path]) -> str:
    machine = report.get("machine", {})
    out = [f"# fastgw bench, {report.get('started_at', '?')}", "",
           f"{report.get('elapsed_s', '?')} s; machine: {machine.get('cpu_model', machine.get('cpus', '?'))}; "
           f"parameters: `{json.dumps(report.get('params', {}), sort_keys=True)}`", "",
           "| scenario | direct req/s | nginx req/s | fastgw req/s | fastgw/nginx | nginx µs/req | fastgw µs/req "
           "| µs fastgw/nginx | fastgw p50 ms | fastgw p99 ms | flags |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        out.append("| " + " | ".join([
            r["scenario"], _cell(r.get("direct_rps"), ",.0f"), _cell(r.get("nginx_rps"), ",.0f"),
            _cell(r.get("fastgw_rps"), ",.0f"), _cell(r.get("ratio"), ".2f"), _cell(r.get("nginx_cpu_us"), ".1f"),
            _cell(r.get("fastgw_cpu_us"), ".1f"), _cell(r.get("cpu_ratio"), ".2f"),
            _cell(r.get("fastgw_p50_ms"), ".2f"), _cell(r.get("fastgw_p99_ms"), ".2f"),
            "; ".join(r.get("flags", [])) or "ok"]) + " |")
    out.append("")
    for r in rows:
        if r.get("what"):
            out.append(f"- **{r['scenario']}**: {r['what']} (compared with {r.get('compared_with', 'nginx')})")
    for title, image in images.items():
        out += ["", f"## {title}", "", f"![{title}]({image.name})"]
    return "\n".join(out) + "\n"


def write_report(json_path: Path) -> dict[str, Path]:
    """Write the pictures and the Markdown beside ``json_path``; returns what was written."""
    report = json.loads(json_path.read_text())
    rows = report.get("table") or []
    if not rows:
        raise ValueError(f"{json_path}: no scenario rows to draw")
    stem = json_path.with_suffix("")
    images = {
        "throughput": Path(f"{stem}-throughput.png"),
        "CPU per request": Path(f"{stem}-cpu.png"),
        "latency": Path(f"{stem}-latency.png"),
    }
    _bars(rows, "rps", TARGETS, "throughput per scenario", "requests/s", images["throughput"])
    _bars(rows, "cpu_us", TARGETS, "proxy CPU per request", "µs per request", images["CPU per request"])
    _latency(report, rows, images["latency"])
    markdown_path = Path(f"{stem}.md")
    markdown_path.write_text(markdown(report, rows, images))
    return {**images, "markdown": markdown_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a JSON file bench/run.py wrote")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.results)
    except (OSError, ValueError) as exc:
        sys.exit(f"bench.report: {exc}")
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
