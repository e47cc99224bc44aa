// Every console call to the admin API goes through adminFetch: it sends the admin token as a
// bearer header (never a cookie, so no other site can make the browser use it), asks for the
// token once when the API answers 401, and keeps it for this tab only (sessionStorage).
"use strict";

async function adminFetch(url, options = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const token = sessionStorage.getItem("fastgw-admin-token");
    const headers = Object.assign({ "accept": "application/json" }, options.headers || {});
    if (token) headers["authorization"] = "Bearer " + token;
    const response = await fetch(url, Object.assign({ cache: "no-store" }, options, { headers }));
    if (response.status !== 401 || attempt === 1) return response;
    const given = window.prompt("Admin token (admin.token of this gateway):");
    if (!given) return response;
    sessionStorage.setItem("fastgw-admin-token", given.trim());
  }
}
