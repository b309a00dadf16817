// aca-reconciler's dashboard: polls /status and draws it. Read-only.
// Every string from YAML or Azure goes through textContent or setAttribute, never innerHTML.
"use strict";

const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";

// State: the word shown (with its colour class) and the order in the filter.
const STATES = {
  failing: "failing",
  blocked: "blocked",
  rolledBack: "rolled back",
  missing: "missing",
  drifted: "drifted",
  applying: "applying",
  waiting: "waiting",
  progressing: "rollout in progress",
  pending: "pending",
  suspended: "suspended",
  inSync: "in sync",
};

let last = null; // the last /status
let lastOk = null; // when it was read
let refreshes = 0;

// ---- small DOM helpers ------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function badge(state) {
  return el("span", { class: "state state-" + (STATES[state] ? state : "unknown"), "data-state": state },
    STATES[state] || String(state));
}

function appId(a) {
  return a.subscription + "/" + a.resourceGroup + "/" + a.name;
}

// "2026-12-05T04:01:02.123Z" -> "04:01:02 (3m ago)"; times are UTC like the logs.
function when(text) {
  if (!text) return "—";
  const t = Date.parse(text);
  if (Number.isNaN(t)) return String(text);
  const iso = new Date(t).toISOString();
  // Older than 20 hours (or as far ahead): the date too.
  const stamp = Math.abs(Date.now() - t) > 72e6 ? iso.slice(0, 10) + " " + iso.slice(11, 16) : iso.slice(11, 19);
  return stamp + " UTC (" + ago(t) + ")";
}

function ago(t) {
  const s = Math.round((Date.now() - t) / 1000);
  const abs = Math.abs(s);
  const text = abs < 90 ? abs + "s" : abs < 5400 ? Math.round(abs / 60) + "m"
    : abs < 172800 ? Math.round(abs / 3600) + "h" : Math.round(abs / 86400) + "d";
  return s >= 0 ? text + " ago" : "in " + text;
}

function tagOf(image) {
  // "name=registry/repo:tag" -> "tag" (or the digest's start)
  const ref = image.includes("=") ? image.slice(image.indexOf("=") + 1) : image;
  const at = ref.indexOf("@");
  if (at >= 0) return ref.slice(at + 1, at + 20);
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  return colon > slash ? ref.slice(colon + 1) : "latest";
}

// ---- traffic bar ------------------------------------------------------------------------

function trafficBar(app) {
  const live = app.live;
  const wrap = el("div", { class: "traffic", "data-field": "traffic" });
  if (!live || !live.traffic || live.traffic.length === 0) {
    wrap.append(el("span", { class: "muted" }, live ? "no ingress traffic rules" : "not read yet"));
    return wrap;
  }
  const canary = app.rollout ? app.rollout.canary : null;
  const stable = app.rollout ? app.rollout.stable : null;
  const bar = el("div", { class: "bar", role: "img" });
  const legend = el("ul", { class: "legend" });
  const words = [];
  live.traffic.forEach((t, i) => {
    const running = t.runningState === undefined ? null : /^running/i.test(t.runningState);
    let kind = canary && t.revision === canary ? "new"
      : stable ? (t.revision === stable ? "first" : "other")
      : i === 0 ? "first" : "other";
    if (running === false) kind = "down";
    const name = t.revision || (t.latest ? "latest" : "?");
    const share = el("span", {
      class: "share share-" + kind,
      "data-revision": name,
      "data-weight": t.weight,
      title: name + ": " + t.weight + "%" + (t.runningState ? " (" + t.runningState + ")" : ""),
    });
    share.style.width = Math.max(0, Math.min(100, Number(t.weight) || 0)) + "%";
    bar.append(share);
    const state = t.runningState ? " " + t.runningState : "";
    const role = kind === "new" ? " (new)" : stable && t.revision === stable ? " (stable)" : "";
    const label = (t.label ? t.label + ": " : "") + name + role;
    legend.append(el("li", { class: "key-" + kind }, el("span", { class: "swatch swatch-" + kind }),
      label + " " + t.weight + "%" + (running === false ? " — NOT RUNNING:" + state : state)));
    words.push(label + " " + t.weight + "%");
  });
  bar.setAttribute("aria-label", "traffic: " + words.join(", "));
  wrap.append(bar, legend);
  return wrap;
}

// ---- overview ---------------------------------------------------------------------------

function renderHeader(s) {
  const dl = clear(document.getElementById("summary"));
  const fact = (k, v, cls) => dl.append(el("div", { class: cls }, el("dt", {}, k), el("dd", {}, v)));
  if (s.leadership) fact("Replica", s.leadership === "leader" ? "leader (acts)" : "standby (another replica acts)", "lead-" + s.leadership);
  else fact("Replica", "single (no leader election)");
  fact("Desired state", (s.desiredCommit ? "commit " + s.desiredCommit + ", " : "") + "loaded " + when(s.desiredLoadedAt));
  fact("Last pass", when(s.lastPassAt) + " · " + s.passes + " passes");
  fact("Ready", s.ready ? "yes" : "no: the first look at every app is not done");

  const errs = s.desiredStateErrors || [];
  document.getElementById("problems").hidden = errs.length === 0;
  const ul = clear(document.getElementById("desired-errors"));
  for (const e of errs) ul.append(el("li", {}, el("code", {}, e)));
}

function renderCounts(apps) {
  const box = clear(document.getElementById("counts"));
  const n = {};
  for (const a of apps) n[a.state] = (n[a.state] || 0) + 1;
  box.append(el("span", { class: "total" }, apps.length + " apps"));
  for (const st of Object.keys(STATES)) {
    if (!n[st]) continue;
    const b = badge(st);
    b.textContent = n[st] + " " + STATES[st];
    box.append(b);
  }
}

function fillStateFilter() {
  const sel = document.getElementById("filter-state");
  if (sel.options.length > 1) return;
  for (const [k, v] of Object.entries(STATES)) sel.append(el("option", { value: k }, v));
  const q = new URLSearchParams(location.search);
  if (q.get("state")) sel.value = q.get("state");
  if (q.get("name")) document.getElementById("filter-name").value = q.get("name");
}

function renderGroups(s) {
  fillStateFilter();
  const name = document.getElementById("filter-name").value.trim().toLowerCase();
  const state = document.getElementById("filter-state").value;
  const apps = (s.apps || []).filter((a) =>
    (!name || a.name.toLowerCase().includes(name)) && (!state || a.state === state));
  const groups = new Map();
  for (const a of apps) {
    const k = a.subscription + "\u0000" + a.resourceGroup;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(a);
  }
  const root = clear(document.getElementById("groups"));
  if (apps.length === 0) {
    root.append(el("p", { class: "muted" }, (s.apps || []).length ? "No app matches the filter." : "No managed apps."));
    return;
  }
  for (const list of groups.values()) {
    const first = list[0];
    const section = el("section", { class: "group" });
    section.append(el("h2", {}, "resource group " + first.resourceGroup, el("small", {}, " · subscription " + first.subscription)));
    const table = el("table", { class: "apps" });
    table.append(el("thead", {}, el("tr", {},
      ...["App", "State", "Image", "Replicas desired / live", "Traffic", "Last action", "Last error", "Next check"].map((h) => el("th", { scope: "col" }, h)))));
    const body = el("tbody");
    for (const a of list) body.append(appRow(a));
    table.append(body);
    section.append(table);
    root.append(section);
  }
}

function appRow(a) {
  const live = a.live;
  const images = live ? live.images : [];
  const tags = images.map(tagOf).join(", ");
  let replicas = (a.replicasDesired || "Azure's") + " / " + (live ? live.replicas : "?");
  if (live && live.runningReplicas !== undefined) replicas += " (" + live.runningReplicas + " running)";
  const drift = live && a.replicasDesired && live.replicas !== a.replicasDesired;
  const href = "#/app/" + [a.subscription, a.resourceGroup, a.name].map(encodeURIComponent).join("/");
  const tr = el("tr", { "data-app": appId(a), "data-state": a.state },
    el("th", { scope: "row" }, el("a", { href }, a.name), a.desiredStale ? el("div", { class: "warn" }, "file has errors: last good version in force") : null),
    el("td", { "data-field": "state" }, badge(a.state), a.failures > 1 ? el("div", { class: "muted" }, a.failures + " failures in a row") : null),
    el("td", { "data-field": "image", title: images.join("\n") }, tags || "—"),
    el("td", { "data-field": "replicas", class: drift ? "differs" : "" }, replicas, drift ? el("div", { class: "warn" }, "live differs from desired") : null),
    el("td", {}, trafficBar(a)),
    lastAction(a.lastAction),
    el("td", { "data-field": "last-error", class: a.lastError ? "error-text" : "" }, a.lastError || "—"),
    el("td", { "data-field": "next" }, a.nextAt ? when(a.nextAt) : "at the next resync"));
  return tr;
}

// "TIME description": the time as "hh:mm:ss UTC (ago)", the description cut at 110 characters
// (all of it on hover, and on the app's page).
function lastAction(text) {
  const td = el("td", { "data-field": "last-action" });
  if (!text) {
    td.append("—");
    return td;
  }
  const space = text.indexOf(" ");
  const at = space > 0 ? text.slice(0, space) : "";
  const what = space > 0 ? text.slice(space + 1) : text;
  td.setAttribute("title", text);
  td.append(el("div", { class: "muted" }, when(at)), what.length > 110 ? what.slice(0, 109) + "…" : what);
  return td;
}

function renderRetention(s) {
  const box = clear(document.getElementById("retention-body"));
  const r = s.retention;
  if (!r) {
    box.append(el("p", { class: "muted" }, "No retention run yet in this process (it runs every --reverify-after resyncs when the desired state has a RegistryRetention)."));
    return;
  }
  box.append(el("p", {}, "Last run " + when(r.at) + "."));
  const t = el("table", { class: "retention" });
  t.append(el("thead", {}, el("tr", {}, ...["Registry", "Repository", "Kept", "Deleted", "Protected", "Held back by the cap"].map((h) => el("th", { scope: "col" }, h)))));
  const b = el("tbody");
  for (const x of r.repositories) b.append(el("tr", {}, el("td", {}, x.registry), el("td", {}, x.repository), el("td", { class: "num" }, x.kept), el("td", { class: "num" }, x.deleted), el("td", { class: "num" }, x.protected), el("td", { class: "num" }, x.heldBack)));
  t.append(b);
  box.append(t);
  for (const e of r.errors || []) box.append(el("p", { class: "error-text" }, e));
}

// The events of /status (oldest first there), newest first, at most `max`.
function renderEvents(box, events, max) {
  clear(box);
  const shown = events.slice(-max).reverse();
  if (shown.length === 0) {
    box.append(el("p", { class: "muted" }, "No events yet in this process: changes, failures, recoveries and rollout steps appear here as they happen."));
    return;
  }
  const t = el("table", { class: "events" });
  t.append(el("thead", {}, el("tr", {}, ...["When", "Type", "Reason", "Object", "Message"].map((h) => el("th", { scope: "col" }, h)))));
  const b = el("tbody");
  for (const e of shown) {
    const object = e.app ? e.app.resourceGroup + "/" + e.app.name : (e.reason === "RetentionDone" || e.reason === "RetentionFailed" ? "registries" : (e.source || "controller"));
    const tr = el("tr", { "data-reason": e.reason, class: "event-" + e.severity },
      el("td", {}, when(e.at)),
      el("td", {}, e.severity),
      el("td", {}, e.reason),
      el("td", {}, object),
      el("td", { class: "message" }, e.message));
    b.append(tr);
  }
  t.append(b);
  box.append(t);
}

// ---- app page ---------------------------------------------------------------------------

function renderApp(s, id) {
  const a = (s.apps || []).find((x) => appId(x) === id);
  const title = clear(document.getElementById("app-title"));
  const facts = clear(document.getElementById("app-facts"));
  if (!a) {
    title.append("No managed app " + id);
    for (const t of ["app-revisions", "app-actions"]) clear(document.getElementById(t));
    document.getElementById("app-rollout").hidden = true;
    return;
  }
  title.append(a.name + " ", badge(a.state));
  const fact = (k, v) => facts.append(el("div", {}, el("dt", {}, k), el("dd", {}, v)));
  fact("Where", a.subscription + " / " + a.resourceGroup);
  fact("Source", a.source || "—");
  fact("Images", a.live ? a.live.images.join(", ") : "not read yet");
  fact("Replicas desired / live", (a.replicasDesired || "Azure's") + " / " + (a.live ? a.live.replicas : "?"));
  fact("Traffic", trafficBar(a));
  fact("Last error", a.lastError || "—");
  fact("Next check", a.nextAt ? when(a.nextAt) : "at the next resync");

  renderRollout(a);

  const rt = clear(document.getElementById("app-revisions"));
  rt.append(el("thead", {}, el("tr", {}, ...["Revision", "Active", "Running state", "Created", "Image", "Weight", "Replicas"].map((h) => el("th", { scope: "col" }, h)))));
  const rb = el("tbody");
  const revs = a.live && a.live.revisions ? a.live.revisions : [];
  if (revs.length === 0) rb.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "Revisions not read (the spec does not need them) or not read yet.")));
  for (const r of revs) {
    const running = r.runningState && /^running/i.test(r.runningState);
    rb.append(el("tr", { "data-revision": r.name },
      el("td", {}, r.name), el("td", {}, r.active ? "active" : "inactive"),
      el("td", { class: r.active && !running ? "error-text" : "" }, r.runningState || "—"),
      el("td", {}, r.created ? when(r.created) : "—"), el("td", {}, r.image || "—"),
      el("td", { class: "num" }, r.weight + "%"), el("td", { class: "num" }, r.replicas === undefined ? "—" : r.replicas)));
  }
  if (a.live && a.live.revisionsOmitted) {
    rb.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, a.live.revisionsOmitted + " inactive revision(s) not shown (az containerapp revision list lists them).")));
  }
  rt.append(rb);

  const at = clear(document.getElementById("app-actions"));
  at.append(el("thead", {}, el("tr", {}, ...["When", "Action", "Result", "Azure request id"].map((h) => el("th", { scope: "col" }, h)))));
  const ab = el("tbody");
  const acts = (a.recentActions || []).slice().reverse();
  if (acts.length === 0) ab.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No action since this process started.")));
  for (const x of acts) {
    ab.append(el("tr", {}, el("td", {}, when(x.at)), el("td", {}, x.description),
      el("td", { class: x.result === "ok" ? "" : "error-text" }, x.result + (x.error ? ": " + x.error : "")),
      el("td", {}, el("code", {}, x.requestId || "—"))));
  }
  at.append(ab);
}

function renderRollout(a) {
  const box = document.getElementById("app-rollout");
  const r = a.rollout;
  box.hidden = !r;
  if (!r) return;
  const facts = clear(document.getElementById("rollout-facts"));
  const fact = (k, v) => facts.append(el("div", {}, el("dt", {}, k), el("dd", {}, v)));
  const phaseWords = { starting: "starting the new revision", progressing: "progressing", waitingForApproval: "waiting for `rollout promote`", promoted: "promoted", rolledBack: "ROLLED BACK" };
  fact("Phase", (phaseWords[r.phase] || r.phase) + (r.step >= 0 && r.phase !== "promoted" && r.phase !== "rolledBack" ? " — step " + (r.step + 1) + " of " + (r.steps || []).length : ""));
  fact("New revision", r.canary + " at " + r.weight + "%");
  fact("Stable revision", r.stable);
  fact("Failed checks", r.failedChecks + (r.maxFailedChecks !== undefined ? " of " + r.maxFailedChecks + " allowed" : ""));
  fact("Step since", when(r.since));
  if (r.reason) fact(r.phase === "rolledBack" ? "Why it rolled back" : "Why it holds", r.reason);

  const ol = clear(document.getElementById("rollout-steps"));
  (r.steps || []).forEach((st, i) => {
    const done = r.phase === "promoted" || i < r.step;
    const now = i === r.step && r.phase !== "promoted" && r.phase !== "rolledBack";
    const word = done ? "done" : now ? "now" : "to come";
    const desc = st.weight !== undefined ? st.weight + "%" : JSON.stringify(st);
    ol.append(el("li", { class: "step step-" + word.replace(" ", "-") }, desc + (st.pauseMs ? ", held " + dur(st.pauseMs) : "") + " — " + word));
  });
  plot(a);
  const t = clear(document.getElementById("rollout-checks"));
  t.hidden = (a.checks || []).length === 0;
  t.append(el("caption", {}, "Checks of this rollout, newest first"));
  t.append(el("thead", {}, el("tr", {}, ...["When", "Step", "Verdict", "Stable success %", "New success %", "Requests stable / new", "Why"].map((h) => el("th", { scope: "col" }, h)))));
  const b = el("tbody");
  for (const c of (a.checks || []).slice().reverse()) {
    b.append(el("tr", {}, el("td", {}, when(new Date(c.at).toISOString())), el("td", { class: "num" }, c.step + 1),
      el("td", {}, el("span", { class: "verdict verdict-" + c.verdict }, c.verdict)),
      el("td", { class: "num" }, pct(c.stableRate)), el("td", { class: "num" }, pct(c.canaryRate)),
      el("td", { class: "num" }, c.stableRequests + " / " + c.canaryRequests), el("td", {}, c.reason)));
  }
  t.append(b);
}

function dur(ms) {
  const s = Math.round(ms / 1000);
  return s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
}

function pct(x) {
  return x === undefined || x === null ? "—" : x.toFixed(2);
}

// The checks over time: success rate of stable and new (left axis, %), requests of new (bars),
// and the threshold (successRate.min, read from the reason when the spec's value is not in
// /status) as a dashed line.
function plot(a) {
  const fig = clear(document.getElementById("rollout-plot"));
  const checks = a.checks || [];
  if (checks.length === 0) {
    fig.append(el("p", { class: "muted" }, "No analysis check yet in this process."));
    return;
  }
  const W = 640, H = 220, L = 48, R = 56, T = 12, B = 34;
  const t0 = checks[0].at, t1 = Math.max(checks[checks.length - 1].at, t0 + 1);
  const rates = [];
  for (const c of checks) for (const v of [c.stableRate, c.canaryRate]) if (typeof v === "number") rates.push(v);
  const threshold = typeof a.successRateMin === "number" ? a.successRateMin : thresholdOf(checks);
  if (threshold !== null) rates.push(threshold);
  const lo = Math.max(0, Math.floor(Math.min(100, ...rates) / 5) * 5 - 5);
  const maxReq = Math.max(1, ...checks.map((c) => c.canaryRequests + c.stableRequests));
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + ((100 - v) / (100 - lo || 1)) * (H - T - B);
  const yr = (n) => H - B - (n / maxReq) * (H - T - B);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "success rate of the stable and the new revision per check, with the threshold" });
  s.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot-bg" }));
  for (const v of [lo, (lo + 100) / 2, 100]) {
    s.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    s.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, v.toFixed(0) + "%"));
  }
  s.append(svg("text", { x: W - R + 6, y: T + 10, class: "axis" }, maxReq + " req"));
  s.append(svg("text", { x: W - R + 6, y: H - B, class: "axis" }, "0 req"));
  const bw = Math.max(3, Math.min(14, (W - L - R) / checks.length / 2));
  for (const c of checks) {
    const n = c.canaryRequests + c.stableRequests;
    s.append(svg("rect", { x: x(c.at) - bw / 2, y: yr(n), width: bw, height: H - B - yr(n), class: "requests" }, undefined));
  }
  if (threshold !== null) {
    s.append(svg("line", { x1: L, x2: W - R, y1: y(threshold), y2: y(threshold), class: "threshold" }));
    s.append(svg("text", { x: W - R - 4, y: y(threshold) - 4, "text-anchor": "end", class: "threshold-label" }, "threshold " + threshold + "%"));
  }
  for (const [key, cls] of [["stableRate", "stable"], ["canaryRate", "new"]]) {
    const pts = checks.filter((c) => typeof c[key] === "number").map((c) => x(c.at).toFixed(1) + "," + y(c[key]).toFixed(1));
    if (pts.length > 1) s.append(svg("polyline", { points: pts.join(" "), class: "line-" + cls }));
    for (const c of checks) {
      if (typeof c[key] !== "number") continue;
      // The stable's dots are larger: where both revisions score the same, both show.
      const dot = svg("circle", { cx: x(c.at), cy: y(c[key]), r: cls === "new" ? 3.5 : 6, class: "dot-" + cls + (c.verdict === "fail" ? " failed" : "") });
      dot.append(svg("title", {}, (cls === "new" ? "new" : "stable") + " " + c[key].toFixed(2) + "% · " + c.verdict + " · " + c.reason));
      s.append(dot);
    }
  }
  const secs = Math.round((t1 - t0) / 1000);
  s.append(svg("text", { x: L, y: H - 10, class: "axis" }, "first check"));
  s.append(svg("text", { x: W - R, y: H - 10, "text-anchor": "end", class: "axis" }, "+" + secs + "s"));
  fig.append(s);
  fig.append(el("figcaption", {},
    el("span", { class: "swatch swatch-first" }), " stable success %  ",
    el("span", { class: "swatch swatch-new" }), " new success % (hollow: failed check)  ",
    el("span", { class: "swatch swatch-requests" }), " requests per check  ",
    el("span", { class: "swatch swatch-threshold" }), threshold === null ? " (no successRate.min in the spec)" : " threshold (successRate.min)"));
}

// The success-rate threshold, as the checks' reasons state it ("... 81.2% < 99% ..." or ">= 99%").
function thresholdOf(checks) {
  for (let i = checks.length - 1; i >= 0; i--) {
    const m = /success rate [0-9.]+% (?:<|>=|≥) ([0-9.]+)%/.exec(checks[i].reason || "");
    if (m) return Number(m[1]);
  }
  return null;
}

// ---- the loop ---------------------------------------------------------------------------

function route() {
  const h = location.hash;
  if (h.startsWith("#/app/")) {
    return h.slice(6).split("/").map(decodeURIComponent).join("/");
  }
  return null;
}

function render() {
  if (!last) return;
  const id = route();
  document.getElementById("overview").hidden = id !== null;
  document.getElementById("app-page").hidden = id === null;
  renderHeader(last);
  if (id === null) {
    renderCounts(last.apps || []);
    renderGroups(last);
    renderEvents(document.getElementById("events-body"), last.events || [], 20);
    renderRetention(last);
    document.title = "aca-reconciler · " + (last.apps || []).length + " apps";
  } else {
    renderApp(last, id);
    renderEvents(document.getElementById("app-events"), (last.events || []).filter((e) => e.app && appId(e.app) === id), 20);
    document.title = "aca-reconciler · " + id.split("/").pop();
  }
}

async function poll() {
  const conn = document.getElementById("connection");
  try {
    const r = await fetch("status", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error("HTTP " + r.status);
    last = await r.json();
    lastOk = Date.now();
    refreshes++;
    document.body.dataset.refreshes = String(refreshes);
    conn.className = "ok";
    conn.textContent = "Live: updated " + new Date(lastOk).toISOString().slice(11, 19) + " UTC, every " + REFRESH_MS / 1000 + " s";
    render();
  } catch (e) {
    conn.className = "stale";
    conn.textContent = "CANNOT REACH THE CONTROLLER (" + e.message + "): " +
      (lastOk ? "what you see is from " + new Date(lastOk).toISOString().slice(11, 19) + " UTC" : "nothing loaded yet") + "; retrying.";
  } finally {
    setTimeout(poll, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("filter-name").addEventListener("input", render);
  document.getElementById("filter-state").addEventListener("change", render);
  window.addEventListener("hashchange", render);
  poll();
});
