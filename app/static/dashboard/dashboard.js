// streamshop dashboard: logs in with POST /auth/login, keeps the access token in memory only,
// reads the analytics routes with it, and follows /dashboard/feed with a short-lived ticket
// (an EventSource cannot send an Authorization header). No request leaves this origin.
"use strict";

const state = { token: null, role: null, chart: null, source: null, lastId: null, timer: null };
const $ = (id) => document.getElementById(id);
const money = (minor) => (minor / 100).toFixed(2);

function claims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part));
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.token}` };
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) { logout("Your session ended; log in again."); throw new Error("401"); }
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}

function rows(tbody, data, cells) {
  tbody.replaceChildren(...data.map((item) => {
    const tr = document.createElement("tr");
    for (const value of cells(item)) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    return tr;
  }));
}

function drawSales(sales) {
  const box = $("sales-chart");
  const xs = sales.map((d) => Date.parse(d.period + "T00:00:00Z") / 1000);
  const data = [xs, sales.map((d) => d.gross / 100), sales.map((d) => d.refunds / 100),
    sales.map((d) => d.net / 100)];
  box.dataset.points = String(xs.length);
  // One day alone would stretch the time axis over years: show a day either side.
  const frame = () => xs.length && state.chart.setScale("x",
    { min: xs[0] - 86400, max: xs[xs.length - 1] + 86400 });
  if (state.chart) { state.chart.setData(data); frame(); return; }
  state.chart = new uPlot({
    width: Math.max(box.clientWidth, 320), height: 240,
    series: [{}, { label: "gross", stroke: "#2b6cb0", width: 2, points: { size: 8 } },
      { label: "refunds", stroke: "#c53030", width: 2 },
      { label: "net", stroke: "#2f855a", width: 2 }],
    axes: [{}, { values: (u, ticks) => ticks.map((v) => v.toFixed(0)) }],
    scales: { x: { time: true } },
  }, data, box);
  frame();
}

async function refresh() {
  const [sales, top, funnel, overview] = await Promise.all([
    api("/analytics/sales?granularity=day"),
    api("/analytics/top-products?limit=10"),
    api("/analytics/funnel?granularity=day"),
    api("/dashboard/overview"),
  ]);
  drawSales(sales);
  rows($("sales").tBodies[0], sales.slice(-14).reverse(),
    (d) => [d.period, money(d.gross), money(d.refunds), money(d.net)]);
  rows($("top-products").tBodies[0], top,
    (p) => [p.name || p.product_id, p.quantity, money(p.revenue)]);
  const steps = ["carts", "checkouts", "paid", "shipped", "delivered", "cancelled", "expired"];
  const sums = Object.fromEntries(steps.map((s) => [s, funnel.reduce((n, d) => n + d[s], 0)]));
  rows($("funnel").tBodies[0], steps, (s) => [s, sums[s]]);
  rows($("projections").tBodies[0], overview.projections,
    (p) => [p.projection, p.lag_events, p.lag_seconds.toFixed(1), p.dead_letters]);
}

async function follow() {
  if (!state.token) return;
  let ticket;
  try {
    ({ ticket } = await api("/dashboard/feed-ticket", { method: "POST" }));
  } catch (err) {
    $("feed-state").textContent = "offline";
    setTimeout(follow, 3000);
    return;
  }
  const params = new URLSearchParams({ ticket });
  if (state.lastId) params.set("after", state.lastId);
  const source = new EventSource(`/dashboard/feed?${params}`);
  state.source = source;
  source.onopen = () => { $("feed-state").textContent = "live"; };
  source.onmessage = (msg) => {
    state.lastId = msg.lastEventId || state.lastId;
    if (!msg.data) return; // the feed's first message only names where it starts
    const entry = JSON.parse(msg.data);
    const li = document.createElement("li");
    li.className = "order-event";
    li.dataset.type = entry.type;
    const total = entry.data && entry.data.total !== undefined ? ` ${money(entry.data.total)}` : "";
    li.textContent = `${entry.at} ${entry.type} ${entry.aggregate}${total}`;
    $("live-orders").prepend(li);
    while ($("live-orders").children.length > 100) $("live-orders").lastChild.remove();
  };
  source.onerror = () => {
    // The ticket lives a minute: a reconnect takes a new one and resumes after lastId.
    source.close();
    if (state.source === source) {
      state.source = null;
      $("feed-state").textContent = "reconnecting";
      setTimeout(follow, 1000);
    }
  };
}

function show(loggedIn) {
  $("login-panel").hidden = loggedIn;
  $("panels").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
}

function logout(message = "") {
  state.token = null;
  if (state.source) { state.source.close(); state.source = null; }
  clearInterval(state.timer);
  $("who").textContent = "";
  $("login-error").textContent = message;
  show(false);
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const resp = await fetch("/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  const body = await resp.json();
  if (!resp.ok) { $("login-error").textContent = body.detail || "login failed"; return; }
  const role = claims(body.access_token).role;
  if (role !== "admin" && role !== "seller") {
    $("login-error").textContent = "the dashboard needs an admin or seller account";
    return;
  }
  state.token = body.access_token;
  state.role = role;
  $("password").value = "";
  $("who").textContent = `${$("email").value} (${role})`;
  $("redrive").hidden = role !== "admin";
  show(true);
  await refresh().catch((err) => console.error(err));
  state.timer = setInterval(() => refresh().catch((err) => console.error(err)), 5000);
  follow();
}

async function redrive() {
  $("redrive").disabled = true;
  $("redrive-result").textContent = "re-driving…";
  try {
    const result = await api("/dashboard/dead-letters/redrive", { method: "POST" });
    $("redrive-result").textContent =
      `${result.redriven} re-driven, ${result.failed} failed\n${result.output.join("\n")}`;
    await refresh();
  } catch (err) {
    $("redrive-result").textContent = String(err);
  } finally {
    $("redrive").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("redrive").addEventListener("click", redrive);
});
