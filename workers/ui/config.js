// The config page: the generations the supervisor published, a side-by-side diff of two of them
// (GET /config/diff, redacted), and a one-click rollback.
"use strict";

function td(row, text, cls) {
  const cell = document.createElement("td");
  cell.textContent = text;
  if (cls) cell.className = cls;
  row.appendChild(cell);
  return cell;
}

// Unified diff lines -> side-by-side rows: a run of removed lines is paired with the run of
// added lines that follows it; context lines appear on both sides.
function sideBySide(lines) {
  const rows = [];
  let left = 0, right = 0, removed = [], added = [];
  const flush = () => {
    for (let i = 0; i < Math.max(removed.length, added.length); i++) {
      rows.push([removed[i] !== undefined ? [left + i + 1, removed[i], "del"] : ["", "", ""],
                 added[i] !== undefined ? [right + i + 1, added[i], "add"] : ["", "", ""]]);
    }
    left += removed.length; right += added.length; removed = []; added = [];
  };
  for (const line of lines) {
    if (line.startsWith("---") || line.startsWith("+++")) continue;
    const hunk = /^@@ -(\d+)(?:,\d+)? \+(\d+)/.exec(line);
    if (hunk) {
      flush();
      left = +hunk[1] - 1; right = +hunk[2] - 1;
      rows.push([["", line, "hunk"], ["", "", "hunk"]]);
    } else if (line.startsWith("-")) {
      if (added.length) flush();
      removed.push(line.slice(1));
    } else if (line.startsWith("+")) {
      added.push(line.slice(1));
    } else {
      flush();
      left++; right++;
      rows.push([[left, line.slice(1), ""], [right, line.slice(1), ""]]);
    }
  }
  flush();
  return rows;
}

async function showDiff(from, to) {
  const query = (from ? `from=${from}&` : "") + (to ? `to=${to}` : "");
  const response = await adminFetch("/config/diff?" + query);
  const data = await response.json();
  const body = document.querySelector("#diff tbody");
  body.replaceChildren();
  const summary = document.getElementById("diff-summary");
  if (!response.ok) { summary.textContent = data.error.message; return; }
  const changed = data.diff.filter(l => /^[-+](?![-+]{2})/.test(l)).length;
  summary.textContent = `generation ${data.from} → ${data.to}: ${changed} changed lines` +
    (data.secrets_changed ? "; secrets changed (not shown)" : "") + (data.diff.length ? "" : " (identical)");
  for (const pair of sideBySide(data.diff)) {
    const row = document.createElement("tr");
    for (const [number, text, cls] of pair) {
      td(row, String(number), "num");
      td(row, text, cls);
    }
    body.appendChild(row);
  }
}

async function refresh() {
  const response = await adminFetch("/config/history");
  if (!response.ok) throw new Error("/config/history answered " + response.status);
  const data = await response.json();
  document.getElementById("generation").textContent = data.generation;
  const body = document.querySelector("#history tbody");
  body.replaceChildren();
  const numbers = data.history.map(g => g.generation);
  for (const g of data.history.slice().reverse()) {
    const row = document.createElement("tr");
    const changed = g.changed === null ? "(first)" : g.changed.join(", ") || "(nothing)";
    for (const value of [g.generation, new Date(g.published_at * 1000).toLocaleString(), g.source, changed]) {
      td(row, String(value));
    }
    const action = td(row, "");
    if (g.changed !== null) {
      const button = document.createElement("button");
      button.textContent = "diff";
      button.className = "diff";
      button.addEventListener("click", () => showDiff(null, g.generation).catch(e => console.warn(e)));
      action.appendChild(button);
    }
    body.appendChild(row);
  }
  for (const [id, chosen] of [["from", numbers[numbers.length - 2]], ["to", numbers[numbers.length - 1]]]) {
    const select = document.getElementById(id);
    select.replaceChildren(...numbers.map(n => new Option(String(n), String(n), false, n === chosen)));
  }
  if (numbers.length > 1) await showDiff(null, null);
}

document.getElementById("compare").addEventListener("click", () =>
  showDiff(document.getElementById("from").value, document.getElementById("to").value).catch(e => console.warn(e)));

document.getElementById("rollback").addEventListener("click", async () => {
  const response = await adminFetch("/config/rollback",
    { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const data = await response.json();
  document.getElementById("result").textContent = response.ok
    ? `generation ${data.generation} restores generation ${data.restored}` : data.error.message;
  await refresh();
});

refresh().catch(e => console.warn(e));
