// The console: polls /ui/data once a second and redraws two uPlot charts and the worker table.
"use strict";

const WIDTH = Math.min(1000, window.innerWidth - 60);

function chart(id, labels, colours) {
  const series = [{}].concat(labels.map((label, i) => ({ label, stroke: colours[i], width: 2 })));
  return new uPlot({ width: WIDTH, height: 220, series, axes: [{}, { size: 60 }] },
                   [[], ...labels.map(() => [])], document.getElementById(id));
}

const requests = chart("chart-requests", ["req/s", "errors/s"], ["#1565c0", "#c62828"]);
const tokens = chart("chart-tokens", ["input tokens/s", "output tokens/s"], ["#2e7d32", "#ef6c00"]);

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "-" : String(value);
  row.appendChild(td);
}

async function refresh() {
  const response = await adminFetch("/ui/data");
  if (!response.ok) throw new Error("/ui/data answered " + response.status);
  const data = await response.json();
  const s = data.series;
  requests.setData([s.t, s.requests, s.errors]);
  tokens.setData([s.t, s.tokens_in, s.tokens_out]);
  document.getElementById("generation").textContent = data.generation;
  document.getElementById("samples").textContent = s.t.length;
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const w of data.workers) {
    const row = document.createElement("tr");
    for (const value of [w.slot, w.pid, w.state, w.generation, w.requests_total, w.active_requests, w.restarts]) {
      cell(row, value);
    }
    body.appendChild(row);
  }
}

async function loop() {
  try { await refresh(); } catch (error) { console.warn(error); }
  setTimeout(loop, 1000);
}
loop();
