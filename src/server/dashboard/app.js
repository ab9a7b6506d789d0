// The Stasis dashboard: plain JavaScript over the /api/v1 REST API. The bearer token stays
// in this tab's sessionStorage; it can be handed over in the URL fragment (#token=...),
// which browsers never send to the server.
"use strict";

const state = { token: null, apps: [], policies: [], selected: null, jobs: new Map(), backups: [] };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function say(message, kind = "info") {
  const s = $("#status");
  s.textContent = message;
  s.className = kind;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    sessionStorage.removeItem("stasis-token");
    showLogin("The token was refused; paste it again.");
    throw new Error("unauthorized");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(data && data.error ? data.error.message : `HTTP ${response.status}`);
  return data;
}

function fmtTime(t) {
  if (!t) return "-";
  const d = new Date(t);
  return d.toLocaleString(undefined, { hour12: false });
}

// ---- resources ----

async function loadApps() {
  state.apps = await api("GET", "/api/v1/apps");
  const body = $("#resources tbody");
  body.replaceChildren();
  for (const app of state.apps) {
    const volumes = app.volumes.length ? app.volumes : [{ name: "-", junction_path: null }];
    const row = el("tr", { "data-app": app.name, onclick: () => selectApp(app.name) },
      el("td", {}, el("strong", {}, app.workload), app.workload !== app.name ? el("div", { class: "muted" }, app.name) : ""),
      el("td", {}, app.namespace),
      el("td", { class: "mono" }, ...volumes.map((v) => el("div", {}, v.junction_path ? `${v.junction_path} : ${app.cluster}` : "-"))),
      el("td", { class: "mono" }, ...volumes.map((v) => el("div", {}, v.name))),
      el("td", { class: "policy" }, app.policy || "Unprotected"),
      el("td", { class: `status status-${app.protection}`, title: app.protection_detail }, app.protection.replaceAll("_", " ")));
    if (app.name === state.selected) row.classList.add("selected");
    body.append(row);
  }
  if (state.selected) renderAppPanel();
}

async function loadPolicies() {
  state.policies = await api("GET", "/api/v1/policies");
  const select = $("#policy-select");
  select.replaceChildren(...state.policies.map((p) => el("option", { value: p.name }, `${p.name} (${p.schedule}${p.keep_last ? `, keep ${p.keep_last}` : ""})`)));
}

function selectApp(name) {
  state.selected = name;
  for (const row of document.querySelectorAll("#resources tbody tr")) row.classList.toggle("selected", row.dataset.app === name);
  renderAppPanel();
  loadBackups().catch((e) => say(e.message, "error"));
}

function renderAppPanel() {
  const app = state.apps.find((a) => a.name === state.selected);
  if (!app) return;
  $("#app-panel").hidden = false;
  $("#app-name").textContent = app.name;
  $("#app-detail").textContent = `${app.kind} on ${app.cluster}/${app.svm}: ${app.protection.replaceAll("_", " ")}${app.protection_detail ? " (" + app.protection_detail + ")" : ""}${app.error ? " - " + app.error : ""}`;
  if (app.policy) $("#policy-select").value = app.policy;
  $("#unprotect-btn").disabled = !app.policy;
}

async function loadBackups() {
  if (!state.selected) return;
  state.backups = await api("GET", `/api/v1/backups?app=${encodeURIComponent(state.selected)}`);
  const body = $("#backups tbody");
  body.replaceChildren();
  for (const b of [...state.backups].reverse()) {
    const restorable = b.state === "complete" && !b.expired;
    body.append(el("tr", { "data-backup": b.id },
      el("td", { class: "mono" }, b.snapshot_name),
      el("td", {}, fmtTime(b.started_at)),
      el("td", {}, fmtTime(b.finished_at)),
      el("td", { class: "mono" }, b.consistency_point || "-"),
      el("td", {}, b.freeze_window_ms != null ? `${b.freeze_window_ms.toFixed(2)} ms` : "-"),
      el("td", {}, b.consistency || "-"),
      el("td", { title: b.error || "" }, b.expired ? "expired" : b.state),
      el("td", {}, restorable ? el("button", { class: "restore-btn", type: "button", onclick: () => openRestore(b) }, "Restore") : "")));
  }
  if (!state.backups.length) body.append(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, "No backups yet.")));
}

// ---- actions ----

async function protect(policy) {
  try {
    await api("PUT", `/api/v1/apps/${encodeURIComponent(state.selected)}/policy`, { policy });
    say(policy ? `App ${state.selected} protected by policy ${policy}.` : `Protection removed from ${state.selected}.`);
    await loadApps();
  } catch (e) {
    say(e.message, "error");
  }
}

async function backupNow() {
  try {
    const job = await api("POST", `/api/v1/apps/${encodeURIComponent(state.selected)}/backups`);
    upsertJob(job);
    say(`Backup of ${state.selected} started (job ${job.id}).`);
  } catch (e) {
    say(e.message, "error");
  }
}

let restoring = null;

function openRestore(backup) {
  restoring = backup;
  $("#restore-backup").textContent = backup.snapshot_name;
  $("#restore-form").reset();
  $("#restore-dialog").showModal();
}

async function submitRestore() {
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const body = { mode };
  if (mode === "clone" && $("#clone-name").value.trim()) body.clone_name = $("#clone-name").value.trim();
  if (mode === "in_place") body.confirm_discard_newer = $("#confirm-discard").checked;
  try {
    const job = await api("POST", `/api/v1/backups/${encodeURIComponent(restoring.id)}/restore`, body);
    upsertJob(job);
    say(`Restore of ${restoring.snapshot_name} started (job ${job.id}).`);
  } catch (e) {
    say(e.message, "error");
  }
}

// ---- jobs: live over server-sent events (read with fetch, so the token stays in a header) ----

const JOB_STATE_RANK = { queued: 0, running: 1, succeeded: 2, failed: 2 };

// Is `job` older than what the table shows? The POST that starts a job answers "queued"
// after the event stream may already have said "succeeded": the stale copy must not win.
function isStale(job, previous) {
  if (!previous) return false;
  const [now, before] = [JOB_STATE_RANK[job.state] ?? 0, JOB_STATE_RANK[previous.state] ?? 0];
  return now < before || (now === before && job.steps_done < previous.steps_done);
}

function upsertJob(job) {
  const previous = state.jobs.get(job.id);
  if (isStale(job, previous)) return;
  state.jobs.set(job.id, job);
  let row = document.querySelector(`#jobs tr[data-job="${job.id}"]`);
  const pct = job.steps_total ? Math.round((100 * job.steps_done) / job.steps_total) : 0;
  const cells = [
    el("td", { class: "mono" }, job.id),
    el("td", {}, job.kind.replaceAll("_", " ")),
    el("td", {}, job.app),
    el("td", {}, el("span", { class: "bar" }, el("span", { style: `width:${pct}%` })), ` ${job.step ? job.step.replaceAll("_", " ") : ""}`),
    el("td", { class: `job-state state-${job.state}` }, job.state),
    el("td", {}, fmtTime(job.started_at)),
    el("td", { class: "job-result" }, job.error || job.message || ""),
  ];
  if (!row) {
    row = el("tr", { "data-job": job.id });
    $("#jobs tbody").prepend(row);
  }
  row.className = `job-${job.state}`;
  row.replaceChildren(...cells);
  const finished = job.state === "succeeded" || job.state === "failed";
  if (finished && (!previous || previous.state !== job.state)) {
    loadApps().catch(() => {});
    if (job.app === state.selected) loadBackups().catch(() => {});
  }
}

async function followJobs() {
  // One follower per tab, however often start() runs (a new token, a hash change).
  if (state.following) return;
  state.following = true;
  for (;;) {
    try {
      const response = await fetch("/api/v1/jobs/events", { headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      $("#conn").textContent = "live";
      $("#conn").classList.add("live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) upsertJob(JSON.parse(data));
        }
      }
    } catch (e) {
      // Reconnect below; the reason stays visible on hover and in the console.
      console.warn("job events:", e);
      $("#conn").title = `last error: ${e.message || e}`;
    }
    $("#conn").textContent = "reconnecting";
    $("#conn").classList.remove("live");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// ---- DR ----

async function loadDr() {
  const rows = await api("GET", "/api/v1/dr");
  $("#dr tbody").replaceChildren(...rows.map((d) => el("tr", { "data-dr": d.app },
    el("td", {}, d.app),
    el("td", { class: "dr-status" }, d.status.replaceAll("_", " ")),
    el("td", {}, d.active_site ? `site ${d.active_site.toUpperCase()}` : "-"),
    el("td", {}, d.destination_cluster ? `${d.destination_cluster}/${d.destination_svm}` : "-"),
    el("td", {}, d.last_failover ? `${d.last_failover.kind} ${d.last_failover.state}; RPO ${d.last_failover.rpo_s ?? "-"} s, RTO ${d.last_failover.rto_s ?? "-"} s${d.last_failover.verified ? ", verified" : ""}` : "-"))));
}

// ---- start ----

function showLogin(message) {
  $("#main").hidden = true;
  $("#login").hidden = false;
  if (message) $("#login p").textContent = message;
}

async function start() {
  $("#login").hidden = true;
  $("#main").hidden = false;
  try {
    await loadPolicies();
    await loadApps();
    await loadDr();
    say("");
  } catch (e) {
    if (e.message !== "unauthorized") say(e.message, "error");
    return;
  }
  followJobs();
}

// Take a token handed over in the fragment, and drop it from the address bar and history.
function takeFragmentToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (!fragment.get("token")) return false;
  sessionStorage.setItem("stasis-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname);
  state.token = fragment.get("token");
  return true;
}

document.addEventListener("DOMContentLoaded", () => {
  takeFragmentToken();
  state.token = sessionStorage.getItem("stasis-token");
  // A link with #token= pasted into an open tab changes only the fragment: no reload.
  window.addEventListener("hashchange", () => { if (takeFragmentToken()) start(); });
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token-input").value.trim();
    sessionStorage.setItem("stasis-token", state.token);
    start();
  });
  $("#refresh-btn").addEventListener("click", () => { loadApps().catch((e) => say(e.message, "error")); loadDr().catch(() => {}); });
  $("#protect-btn").addEventListener("click", () => protect($("#policy-select").value));
  $("#unprotect-btn").addEventListener("click", () => protect(null));
  $("#backup-btn").addEventListener("click", backupNow);
  $("#restore-dialog").addEventListener("close", () => { if ($("#restore-dialog").returnValue === "go") submitRestore(); });
  if (state.token) start(); else showLogin();
});
