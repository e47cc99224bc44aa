// The config page: the generations the supervisor published, and a one-click rollback.
"use strict";

async function refresh() {
  const response = await adminFetch("/config/history");
  if (!response.ok) throw new Error("/config/history answered " + response.status);
  const data = await response.json();
  document.getElementById("generation").textContent = data.generation;
  const body = document.querySelector("#history tbody");
  body.replaceChildren();
  for (const g of data.history.slice().reverse()) {
    const row = document.createElement("tr");
    const changed = g.changed === null ? "(first)" : g.changed.join(", ") || "(nothing)";
    for (const value of [g.generation, new Date(g.published_at * 1000).toLocaleString(), g.source, changed]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      row.appendChild(td);
    }
    body.appendChild(row);
  }
}

document.getElementById("rollback").addEventListener("click", async () => {
  const response = await adminFetch("/config/rollback",
    { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const data = await response.json();
  document.getElementById("result").textContent = response.ok
    ? `generation ${data.generation} restores generation ${data.restored}` : data.error.message;
  await refresh();
});

refresh().catch(e => console.warn(e));
