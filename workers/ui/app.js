// The console: polls /ui/data once a second and redraws the uPlot charts and the tables.
// Line charts keep their uPlot; a stacked chart is rebuilt when its top label values change.
"use strict";

const WIDTH = Math.min(1000, window.innerWidth - 60);
const HEIGHT = 200;
const PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#9e9d24", "#757575"];

function lineChart(id, labels, colours) {
  const series = [{}].concat(labels.map((label, i) => ({ label, stroke: colours[i], width: 2 })));
  return new uPlot({ width: WIDTH, height: HEIGHT, series, axes: [{}, { size: 60 }] },
                   [[], ...labels.map(() => [])], document.getElementById(id));
}

const charts = {
  requests: lineChart("chart-requests", ["req/s", "errors/s"], ["#1565c0", "#c62828"]),
  latency: lineChart("chart-latency", ["p50", "p90", "p99"], ["#2e7d32", "#ef6c00", "#c62828"]),
  ttft: lineChart("chart-ttft", ["p50", "p90", "p99"], ["#2e7d32", "#ef6c00", "#c62828"]),
  plain_latency: lineChart("chart-plain-latency", ["p50", "p90", "p99"], ["#2e7d32", "#ef6c00", "#c62828"]),
  cache: new uPlot({
    width: WIDTH, height: HEIGHT,
    series: [{}, { label: "hit ratio", stroke: "#2e7d32", width: 2, scale: "ratio",
                   value: (u, v) => v === null || v === undefined ? "-" : (v * 100).toFixed(1) + " %" },
             { label: "tokens saved/s", stroke: "#1565c0", width: 2, scale: "tokens" }],
    scales: { ratio: { range: [0, 1] } },
    axes: [{}, { scale: "ratio", size: 50, values: (u, ticks) => ticks.map(t => Math.round(t * 100) + "%") },
           { scale: "tokens", side: 1, size: 60, grid: { show: false } }],
  }, [[], [], []], document.getElementById("chart-cache")),
};

// A stacked area chart: series drawn from the top of the stack down, each filled to zero over
// the ones above it; the legend shows each series' own value, not the running sum.
class Stacked {
  constructor(id, scale = 1) {
    this.element = document.getElementById(id);
    this.scale = scale;
    this.key = null;
    this.plot = null;
    this.raw = [];
  }

  update(t, group) {
    const labels = group.labels;
    const key = labels.join("\u0000");
    if (key !== this.key || this.plot === null) {
      if (this.plot !== null) this.plot.destroy();
      const series = [{}];
      for (let i = labels.length - 1; i >= 0; i--) {
        const colour = labels[i] === "other" ? "#9e9e9e" : PALETTE[i % PALETTE.length];
        series.push({ label: labels[i], stroke: colour, fill: colour, width: 1,
                      value: (u, v, si, idx) => idx === null ? "-" : String(this.raw[labels.length - si]?.[idx] ?? "-") });
      }
      this.plot = new uPlot({ width: WIDTH, height: HEIGHT, series, axes: [{}, { size: 60 }] },
                            [[], ...labels.map(() => [])], this.element);
      this.key = key;
    }
    this.raw = group.values.map(column => column.map(v => +(v * this.scale).toPrecision(4)));
    const stacked = [];
    let running = t.map(() => 0);
    for (const column of this.raw) {
      running = running.map((sum, i) => sum + column[i]);
      stacked.push(running);
    }
    this.plot.setData([t, ...stacked.reverse()]);
  }
}

const stacks = {
  tokens_in: new Stacked("chart-tokens-in"),
  tokens_out: new Stacked("chart-tokens-out"),
  cost: new Stacked("chart-cost", 3600),
  rejections: new Stacked("chart-rejections"),
};

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "-" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
}

function healthRows(worker) {
  const health = worker.providers;
  if (!health || health.error) return [];
  const rows = [];
  for (const b of health.breakers) {
    const detail = b.state === "open" ? `reopens for a trial in ${b.open_for_s} s` : `${b.consecutive_failures} failures in a row`;
    rows.push([b.provider, `breaker (${b.model})`, b.state, detail, b.state === "closed" ? "ok" : b.state === "open" ? "bad" : "warn"]);
  }
  for (const k of health.keys) {
    const cooling = k.cooling.map(c => `#${c.index} ${c.reason} ${c.remaining_s} s`).join(", ");
    rows.push([k.provider, "keys", `${k.keys - k.cooling.length}/${k.keys} usable`, cooling || "none cooling down",
               k.cooling.length === 0 ? "ok" : k.cooling.length === k.keys ? "bad" : "warn"]);
  }
  for (const p of health.probes) {
    rows.push([p.provider, "probe", p.healthy ? "up" : "down", new Date(p.at * 1000).toLocaleTimeString(), p.healthy ? "ok" : "bad"]);
  }
  return rows;
}

function renderTables(workers) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  const health = document.querySelector("#health tbody");
  health.replaceChildren();
  for (const w of workers) {
    const row = document.createElement("tr");
    for (const value of [w.slot, w.pid, w.state, w.generation, w.requests_total, w.active_requests, w.restarts]) {
      cell(row, value);
    }
    body.appendChild(row);
    for (const [provider, what, state, detail, cls] of healthRows(w)) {
      const line = document.createElement("tr");
      cell(line, w.slot);
      cell(line, provider, "text");
      cell(line, what, "text");
      cell(line, state, "text " + cls);
      cell(line, detail, "text");
      health.appendChild(line);
    }
  }
}

async function refresh() {
  const seconds = document.getElementById("range").value;
  const response = await adminFetch("/ui/data?seconds=" + seconds);
  if (!response.ok) throw new Error("/ui/data answered " + response.status);
  const data = await response.json();
  const s = data.series;
  const dimension = document.getElementById("dimension").value;
  charts.requests.setData([s.t, s.requests, s.errors]);
  for (const name of ["latency", "ttft", "plain_latency"]) {
    if (s[name + "_p50"]) charts[name].setData([s.t, s[name + "_p50"], s[name + "_p90"], s[name + "_p99"]]);
  }
  if (s.groups) {  // absent while the supervisor keeps no history
    charts.cache.setData([s.t, s.cache_hit_ratio, s.cache_saved_tokens]);
    for (const name of ["tokens_in", "tokens_out", "cost"]) stacks[name].update(s.t, s.groups[`${name}_by_${dimension}`]);
    stacks.rejections.update(s.t, s.groups.rejections_by_rule);
  }
  for (const span of document.querySelectorAll(".dimension")) span.textContent = dimension;
  for (const span of document.querySelectorAll(".window")) span.textContent = s.window;
  document.getElementById("generation").textContent = data.generation;
  document.getElementById("samples").textContent = s.t.length;
  renderTables(data.workers);
}

async function loop() {
  try { await refresh(); } catch (error) { console.warn(error); }
  setTimeout(loop, 1000);
}
document.getElementById("dimension").addEventListener("change", () => refresh().catch(e => console.warn(e)));
loop();
