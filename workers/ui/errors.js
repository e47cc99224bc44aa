// The errors page: GET /diagnose grouped by cause, one request explained by its x-request-id, and
// (with console.summarise) a model's summary of one cause, asked for with a button.
"use strict";

function cells(row, values) {
  for (const [value, cls] of values) {
    const td = document.createElement("td");
    td.textContent = value;
    if (cls) td.className = cls;
    row.appendChild(td);
  }
}

async function refresh() {
  const response = await adminFetch("/diagnose");
  if (!response.ok) throw new Error("/diagnose answered " + response.status);
  const data = await response.json();
  document.getElementById("failures").textContent = data.failures;
  const body = document.querySelector("#causes tbody");
  body.replaceChildren();
  for (const c of data.causes) {
    const row = document.createElement("tr");
    cells(row, [[String(c.count), "count"], [c.cause], [c.explanation], [c.fix], [c.latest.request_id, "id"]]);
    if (data.summarise) {
      const td = document.createElement("td");
      const button = document.createElement("button");
      button.textContent = "summarise";
      button.className = "summarise";
      button.addEventListener("click", () => summarise(c.cause).catch(e => console.warn(e)));
      td.appendChild(button);
      row.appendChild(td);
    }
    body.appendChild(row);
  }
  document.getElementById("summary-head").hidden = !data.summarise;
}

async function summarise(cause) {
  const out = document.getElementById("summary");
  out.textContent = `asking the model about ${cause}…`;
  const response = await adminFetch("/diagnose/summary",
    { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ cause }) });
  const data = await response.json();
  out.textContent = response.ok ? `${data.cause} (${data.count}), by ${data.model}: ${data.summary}` : data.error.message;
}

async function lookup() {
  const id = document.getElementById("request-id").value.trim();
  const out = document.getElementById("one");
  const response = await adminFetch("/diagnose?request_id=" + encodeURIComponent(id));
  const data = await response.json();
  out.textContent = response.ok ? `${data.cause}: ${data.explanation}. Fix: ${data.fix}` : data.error.message;
}

document.getElementById("lookup").addEventListener("click", () => lookup().catch(e => console.warn(e)));

async function loop() {
  try { await refresh(); } catch (error) { console.warn(error); }
  setTimeout(loop, 2000);
}
loop();
