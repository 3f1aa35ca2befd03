// Draws status.json into the page and again every few seconds. Every
// value goes in as text (never as markup): node ids and log lines come
// from outside this page.
"use strict";

const REFRESH_MS = 5000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function ago(ms, now) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function bar(fraction, cls) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  const fill = el("div");
  // Through the CSSOM: the page's CSP refuses style attributes.
  fill.style.width = pct.toFixed(1) + "%";
  return el("div", { class: "bar " + (cls || ""), role: "progressbar",
    "aria-valuenow": pct.toFixed(0), "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
}

function figures(pairs) {
  const dl = el("dl");
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
  return dl;
}

function nodeCard(n, now) {
  const card = el("article", { class: "node" + (n.answered ? "" : " silent"), "data-node": n.id,
    "data-state": n.state });
  card.append(el("h3", {}, el("span", { class: "id" }, n.id),
    el("span", { class: "badge state-" + n.state }, n.state)));
  card.append(el("div", { class: "addr" }, n.addr + (n.version ? " · v" + n.version : "")));
  if (!n.answered) {
    card.append(el("div", { class: "note bad" }, "not answering: " + (n.error || "no answer")));
  }
  if (n.untrusted_reason) {
    card.append(el("div", { class: "note bad" }, "untrusted: " + n.untrusted_reason));
  }
  if (n.unheard_ms) {
    card.append(el("div", { class: "note bad" },
      "unheard by its peers for " + Math.round(n.unheard_ms / 1000) + " s"));
  }
  if (n.capacity_bytes) {
    const used = n.used_bytes || 0;
    const f = used / n.capacity_bytes;
    card.append(bar(f, f > 0.9 ? "full" : ""));
    card.append(el("div", { class: "note" },
      bytes(used) + " of " + bytes(n.capacity_bytes) + " used · " + bytes(n.available_bytes) +
      " available · " + (n.shards ?? "?") + " shards"));
  }
  const r = n.repair;
  if (r) {
    const outstanding = r.missing + r.rebuilding;
    if (outstanding > 0) {
      // Progress of the current repair: rebuilt against rebuilt + still to do.
      const done = r.rebuilt_shards / Math.max(1, r.rebuilt_shards + outstanding);
      card.append(bar(done, "repair"));
    }
    const rows = [
      ["missing", r.missing], ["rebuilding", r.rebuilding], ["waiting", r.waiting],
      ["at risk", r.at_risk], ["rebuilt", r.rebuilt_shards], ["failed rebuilds", r.failed_rebuilds],
      ["scrubbed", r.scrubbed_shards], ["corrupt found", r.corrupt_found],
      ["damaged chunks", r.damaged_chunks],
      ["last reconcile", ago(r.last_reconcile_ms, now)], ["last scrub", ago(r.last_scrub_ms, now)],
    ];
    if (r.rebuilds_paused_until_ms) rows.push(["rebuilds paused", "store full"]);
    rows.push(["audits", n.audits.passed + " passed, " + n.audits.failed + " failed"]);
    card.append(figures(rows));
  } else {
    card.append(figures([["audits", n.audits.passed + " passed, " + n.audits.failed + " failed"]]));
  }
  return card;
}

function total(value, label) {
  return el("div", { class: "total" }, el("b", {}, value), el("span", {}, label));
}

function draw(s) {
  const now = s.time_ms;
  const health = document.getElementById("health");
  health.textContent = s.gateway.healthy ? "healthy" : "unhealthy: " + s.gateway.health;
  health.className = "badge " + (s.gateway.healthy ? "ok" : "bad");
  document.getElementById("epoch").textContent = "map epoch " + s.gateway.map_epoch;
  document.getElementById("updated").textContent =
    "v" + s.gateway.version + " · updated " + new Date(now).toLocaleTimeString();

  const nodes = s.sites.flatMap((site) => site.nodes);
  const sum = (f) => nodes.reduce((a, n) => a + (f(n) || 0), 0);
  const states = {};
  for (const n of nodes) states[n.state] = (states[n.state] || 0) + 1;
  const totals = document.getElementById("totals");
  totals.replaceChildren(
    total(nodes.length, "nodes (" + Object.entries(states).map(([k, v]) => v + " " + k).join(", ") + ")"),
    total(nodes.filter((n) => !n.answered).length, "not answering"),
    total(bytes(sum((n) => n.used_bytes)) + " / " + bytes(sum((n) => n.capacity_bytes)), "used / capacity"),
    total(sum((n) => n.repair && n.repair.missing), "shards missing"),
    total(sum((n) => n.repair && n.repair.rebuilding), "rebuilding"),
    total(sum((n) => n.audits.failed), "failed audit challenges"),
  );

  const sites = document.getElementById("sites");
  sites.replaceChildren(...s.sites.map((site) =>
    el("section", { class: "site", "data-site": site.name },
      el("h2", {}, "Site " + site.name + " (" + site.nodes.length + " nodes)"),
      el("div", { class: "nodes" }, ...site.nodes.map((n) => nodeCard(n, now))))));

  const errors = document.getElementById("errors");
  const lines = s.recent_errors.slice().reverse();
  errors.replaceChildren(...(lines.length === 0
    ? [el("li", { class: "none" }, "none")]
    : lines.map((e) => el("li", { class: e.level },
        new Date(e.time_ms).toLocaleTimeString() + " " + e.level.toUpperCase() + " " +
        e.target + ": " + e.line))));
}

async function refresh() {
  try {
    const resp = await fetch("status.json", { cache: "no-store" });
    if (!resp.ok) throw new Error("status.json: HTTP " + resp.status);
    draw(await resp.json());
  } catch (e) {
    const health = document.getElementById("health");
    health.textContent = "status unavailable: " + e.message;
    health.className = "badge bad";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
