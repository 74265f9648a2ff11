// batpak console: one page, routes in the URL fragment. Every element is
// built with the DOM (no innerHTML), so text from the server is never
// parsed as markup. Data comes from /console/api/<API path>, which the
// server answers as the JSON API would answer the signed-in credential;
// the credential itself stays on the server.
"use strict";
(function () {
  const P = "/console";
  let me = null; // the session: {principal, operator, tenant, roles, csrf_token}
  let cleanup = []; // what the current page must stop when left (timers, streams)
  // repeat runs refresh now and then every ms while the page is shown. The
  // timer is registered before the first run, so leaving the page while
  // it reads stops it; a run still under way (a member slow to answer) is
  // not doubled. The first run's error is the caller's.
  async function repeat(refresh, ms) {
    let busy = true;
    const t = setInterval(() => {
      if (busy) return;
      busy = true;
      refresh().catch(() => {}).finally(() => { busy = false; });
    }, ms);
    cleanup.push(() => clearInterval(t));
    try { await refresh(); } finally { busy = false; }
  }

  // ---------- DOM helpers ----------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }
  const SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(e, kids) {
    for (const k of kids.flat()) {
      if (k === undefined || k === null || k === false) continue;
      e.appendChild(typeof k === "string" || typeof k === "number" ? document.createTextNode(String(k)) : k);
    }
  }
  // put appends kids to e, skipping null, undefined and false (Element.append
  // would write them out as text).
  function put(e, ...kids) { append(e, kids); }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  const $ = (id) => document.getElementById(id);
  function toast(msg) {
    const t = $("toast");
    t.textContent = msg;
    setTimeout(() => { if (t.textContent === msg) t.textContent = ""; }, 4000);
  }
  function status(ok, okText, badText, warn) {
    // Text and a symbol carry the status; the colour only repeats it.
    if (ok) return el("span", { class: "status ok" }, "✔ " + okText);
    return el("span", { class: "status " + (warn ? "warn" : "bad") }, (warn ? "⚠ " : "✖ ") + badText);
  }
  function bytes(n) {
    if (n === undefined || n === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function plural(n, one, many) { return num(n) + " " + (n === 1 ? one : many); }
  function num(n, d) { return n === undefined || n === null ? "–" : Number(n).toFixed(d || 0); }
  // lagBound: a worker's lag (head - position) counts the log's events
  // past its position, in its region or not, so with a region filter it
  // is only an upper bound on the events it has left to handle.
  function lagBound(w) {
    const r = w.region || {};
    return !!w.lag && !!(r.entity || r.scope || r.kind || (r.category !== undefined && r.category !== null));
  }
  function meter(frac, label) {
    frac = Math.max(0, Math.min(1, frac || 0));
    const m = el("span", { class: "meter", role: "img", "aria-label": label });
    m.appendChild(svg("svg", { width: 138, height: 8, "aria-hidden": "true" },
      svg("rect", { class: "meter-fill" + (frac > 0.9 ? " high" : ""), x: 0, y: 0, height: 8, width: Math.round(138 * frac) })));
    return m;
  }

  // ---------- API ----------
  class APIError extends Error {
    constructor(status, body) {
      super((body && (body.detail || body.title)) || ("HTTP " + status));
      this.status = status; this.body = body;
    }
  }
  async function call(method, path, body) { return (await request(method, path, body)).data; }
  // request is call's answer with the text it was parsed from: {data,
  // text} (data null for 204). A caller needing part of the answer as the
  // server wrote it (JSON.parse rounds numbers to doubles) reads it from
  // text with jsonMember.
  async function request(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (me && method !== "GET") init.headers["X-CSRF-Token"] = me.csrf_token;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 204) return { data: null, text: "" };
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
    if (!r.ok) {
      if (r.status === 401 && path !== P + "/session") { me = null; go("#/signin"); }
      throw new APIError(r.status, data);
    }
    return { data, text };
  }
  const api = (method, apiPath, body) => call(method, P + "/api" + apiPath, body);
  const tpath = (rest) => "/v1/tenants/" + encodeURIComponent(me.tenant) + rest;

  // ---------- routing ----------
  function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }
  function params() {
    const h = location.hash.slice(1);
    const q = h.indexOf("?");
    return { path: q < 0 ? h : h.slice(0, q), query: new URLSearchParams(q < 0 ? "" : h.slice(q + 1)) };
  }
  const pages = {
    "/signin": signInPage,
    "/overview": overviewPage,
    "/dashboard": dashboardPage,
    "/streams": streamsPage,
    "/event": eventPage,
    "/graph": graphPage,
    "/tail": tailPage,
    "/policies": policiesPage,
    "/plugins": pluginsPage,
  };
  function navItems() {
    if (!me) return [];
    if (me.operator) return [["#/overview", "Overview"]];
    return [["#/dashboard", "Dashboard"], ["#/streams", "Streams"], ["#/tail", "Live tail"],
      ["#/policies", "Policies"], ["#/plugins", "Plugins & workers"]];
  }
  function renderChrome(path) {
    const nav = $("nav");
    clear(nav);
    for (const [href, label] of navItems()) {
      const cur = path === href.slice(1) || (href === "#/streams" && (path === "/event" || path === "/graph"));
      nav.appendChild(el("a", { href, "aria-current": cur ? "page" : false }, label));
    }
    $("who").textContent = me ? (me.operator ? "operator" : "tenant " + me.tenant + " · key " + me.principal) : "";
    $("signout").hidden = !me;
  }
  async function route() {
    for (const f of cleanup) { try { f(); } catch (e) { /* page already gone */ } }
    cleanup = [];
    let { path, query } = params();
    if (!me && path !== "/signin") {
      try {
        const s = await call("GET", P + "/session");
        me = s && s.signed_in ? s : null;
      } catch (e) { me = null; }
    }
    if (!me) path = "/signin";
    else if (path === "/signin" || path === "" || path === "/" || !pages[path]) path = me.operator ? "/overview" : "/dashboard";
    else if (me.operator && path !== "/overview") path = "/overview";
    else if (!me.operator && path === "/overview") path = "/dashboard";
    if ("#" + path !== location.hash.split("?")[0]) history.replaceState(null, "", "#" + path + (query.toString() ? "?" + query : ""));
    renderChrome(path);
    const main = $("main");
    clear(main);
    try {
      await pages[path](main, query);
    } catch (e) {
      main.appendChild(el("p", { class: "error", role: "alert" }, e.message));
    }
    const h1 = main.querySelector("h1");
    if (h1) { h1.setAttribute("tabindex", "-1"); h1.focus({ preventScroll: true }); }
  }

  // ---------- sign-in ----------
  function signInPage(main) {
    document.title = "Sign in · batpak console";
    const input = el("input", { id: "credential", type: "password", autocomplete: "off", spellcheck: "false", required: true,
      placeholder: "bpk_… or bpko_…", "aria-describedby": "cred-help" });
    const err = el("p", { id: "signin-error", role: "alert" });
    const form = el("form", { class: "panel signin", onsubmit: async (ev) => {
      ev.preventDefault();
      err.className = ""; err.textContent = "";
      try {
        me = await call("POST", P + "/session", { credential: input.value });
        input.value = "";
        go(me.operator ? "#/overview" : "#/dashboard");
      } catch (e) {
        err.className = "error"; err.textContent = e.message;
      }
    } },
      el("h1", {}, "Sign in"),
      el("label", { for: "credential" }, "Tenant API key or operator credential", input),
      el("p", { id: "cred-help", class: "muted" },
        "The key is sent once to this server, which keeps it and gives your browser a session cookie; the page never stores it. A tenant key shows that tenant; the operator credential shows every tenant's figures."),
      el("button", { type: "submit", id: "signin-submit" }, "Sign in"), err);
    main.appendChild(form);
    input.focus();
  }
  async function signOut() {
    try { await call("DELETE", P + "/session"); } catch (e) { /* ended already */ }
    me = null;
    go("#/signin");
  }

  // ---------- charts ----------
  function chart(title, samples, field, unit, field2, label2, digits) {
    const W = 320, H = 110, L = 34, B = 16;
    const d = digits === undefined ? 2 : digits;
    const vals = samples.map((s) => s[field] || 0);
    const vals2 = field2 ? samples.map((s) => s[field2] || 0) : [];
    const maxv = Math.max(1e-9, ...vals, ...vals2);
    const last = vals.length ? vals[vals.length - 1] : 0;
    const xs = (i, n) => L + (n <= 1 ? 0 : (i * (W - L - 4)) / (n - 1));
    const ys = (v) => H - B - (v / maxv) * (H - B - 8);
    const pts = (arr) => arr.map((v, i) => xs(i, arr.length).toFixed(1) + "," + ys(v).toFixed(1)).join(" ");
    const g = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": title + ": now " + num(last, d) + " " + unit + ", peak " + num(maxv < 1e-6 ? 0 : maxv, 2) + " over the last " + samples.length + " s" },
      svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }),
      svg("line", { class: "axis", x1: L, y1: 4, x2: L, y2: H - B }),
      svg("text", { x: 2, y: 12 }, maxv < 1e-6 ? "" : num(maxv, maxv < 10 ? 2 : 0)),
      svg("text", { x: 2, y: H - B }, "0"),
      svg("text", { x: L, y: H - 3 }, "−" + samples.length + " s"),
      svg("text", { x: W - 24, y: H - 3 }, "now"));
    if (vals.length > 1) g.appendChild(svg("polyline", { class: "line", points: pts(vals) }));
    if (vals2.length > 1) g.appendChild(svg("polyline", { class: "line2", points: pts(vals2) }));
    return el("div", { class: "panel" },
      el("div", { class: "chart-title" }, el("span", {}, title), el("span", { class: "mono" }, num(last, d) + " " + unit)),
      g, field2 ? el("div", { class: "legend" }, "solid: " + field.replace(/_/g, " ") + " · dashed: " + label2) : null);
  }

  // ---------- cluster ----------
  // clusterPanel shows a cluster node's status (GET /v1/cluster): its role,
  // the members, and on the leader its replica check, every copy of a
  // tenant's events found different from the leader's as an alert.
  function clusterPanel(c) {
    const members = c.members || [];
    const leader = members.find((m) => m.leader);
    let role = "This node (" + c.id + ") is " + c.state;
    if (c.state !== "leader") role += leader ? "; the leader is " + leader.id + (leader.url ? " at " + leader.url : "") : "; no leader is known";
    const parts = [el("h2", {}, "Cluster"),
      el("p", { id: "cluster-role" }, role + " · term " + num(c.term) + " · applied " + num(c.applied_index) + " of " + num(c.commit_index))];
    if (c.halted) parts.push(el("p", { class: "error", role: "alert" }, "This node stopped applying the log: " + c.halted));
    const rc = c.replica_check;
    if (rc && rc.every === "off") {
      parts.push(el("p", { class: "muted", id: "replica-check" }, "Replica check: off (cluster.replica_check_every)."));
    } else if (rc && !rc.last_round) {
      parts.push(el("p", { class: "muted", id: "replica-check" }, "Replica check every " + rc.every + ": no round has finished yet."));
    } else if (rc) {
      const diverged = rc.diverged || [];
      const agree = rc.agreeing + " of " + rc.copies + " copies on other nodes (of the control plane and of each tenant's events) agree with this node's";
      parts.push(el("p", { id: "replica-check" },
        status(diverged.length === 0 && rc.agreeing === rc.copies, agree, agree, diverged.length === 0),
        " · checked every " + rc.every + ", last round at " + new Date(rc.last_round).toLocaleTimeString() +
        (rc.not_compared ? " · " + plural(rc.not_compared, "copy", "copies") + " not compared in it" : "")));
      for (const why of rc.not_compared_why || []) parts.push(el("p", { class: "muted" }, "Not compared: " + why));
      for (const a of diverged) {
        parts.push(el("p", { class: "error", role: "alert", "data-diverged": a.tenant + "/" + a.node },
          (a.tenant === "(control plane)" ? "The control plane" : "Tenant " + a.tenant) + " on node " + a.node + ": " + a.result + " in events [" + a.from + ", " + a.upto + ")" +
          (a.detail ? " (" + a.detail + ")" : "") + " since " + new Date(a.since).toLocaleString() +
          ". Once the other nodes agree, take that node out (batpak cluster leave), wipe its data root and let it rejoin."));
      }
    } else if (c.state !== "leader") {
      parts.push(el("p", { class: "muted", id: "replica-check" }, "The replica check runs on the leader" +
        (leader && leader.url ? ": its console (" + leader.url + "/console/) shows it." : ".")));
    }
    // With ?nodes=all the node judged every member's health from its own
    // view (GET /v1/cluster?nodes=all); an older node answers without.
    const h = c.health;
    const health = {};
    for (const n of (h && h.nodes) || []) health[n.id] = n;
    if (h) {
      const spare = h.failure_tolerance < 0 ? "no quorum: writes cannot commit"
        : h.failure_tolerance === 0 ? "no member may fail without stopping writes"
        : plural(h.failure_tolerance, "more member", "more members") + " may fail";
      const text = h.healthy_voters + " of " + h.voters + " voters healthy (a quorum is " + h.quorum + "): " + spare;
      parts.push(el("p", { id: "cluster-health" }, status(h.failure_tolerance >= 1, text, text, h.failure_tolerance >= 0)));
    }
    const verdict = (m) => {
      const n = health[m.id];
      if (!n) return el("td", { class: "muted" }, "–");
      const why = (n.problems || []).join("; ");
      if (!n.reachable) return el("td", {}, status(false, "", "unreachable" + (n.error && n.error !== "unreachable" ? ": " + n.error : "")));
      if (!n.healthy) return el("td", {}, status(false, "", "unhealthy: " + why));
      return el("td", {}, status(true, "healthy · " + n.state + " · applied " + num(n.applied_index) + (n.lag ? " (" + num(n.lag) + " behind)" : "")));
    };
    const heads = ["Node", "Role", "Raft address", "API URL"].concat(h ? ["Health"] : []);
    parts.push(el("table", { id: "member-table" },
      el("caption", { class: "muted" }, "Members: role, raft address, API URL" + (h ? ", health" : "")),
      el("thead", {}, el("tr", {}, heads.map((x) => el("th", { scope: "col" }, x)))),
      el("tbody", {}, members.map((m) => el("tr", { "data-node": m.id },
        el("th", { scope: "row" }, m.id + (m.id === c.id ? " (this node)" : "")),
        el("td", {}, m.leader ? "leader" : (m.suffrage || "voter")),
        el("td", { class: "mono" }, m.address),
        el("td", { class: "mono" }, m.url || "–"),
        h ? verdict(m) : null)))));
    return el("section", { class: "panel", id: "cluster-panel", "aria-label": "Cluster" }, parts);
  }

  // ---------- operator overview ----------
  async function overviewPage(main, query) {
    document.title = "Overview · batpak console";
    main.appendChild(el("h1", {}, "Overview"));
    const picked = query.get("tenant") || "";
    const serverBox = el("div", { class: "grid", id: "server-charts" });
    const tenantBox = el("div", { id: "tenant-figures" });
    const table = el("div", { id: "tenants" });
    const clusterBox = el("div", { id: "cluster" });
    put(main, clusterBox, serverBox, table, tenantBox);
    const refresh = async () => {
      const [ov, smp, tsmp] = await Promise.all([call("GET", P + "/overview"), call("GET", P + "/samples/server"),
        picked ? call("GET", P + "/samples/tenants/" + encodeURIComponent(picked)) : null]);
      // A cluster node (the overview says so) shows its cluster status.
      // With every member's health; this node's view alone when that
      // cannot be had (busy, or an older node).
      const cl = ov.cluster ? await api("GET", "/v1/cluster?nodes=all").catch(() => api("GET", "/v1/cluster")).catch(() => null) : null;
      clear(clusterBox);
      if (cl) put(clusterBox, clusterPanel(cl));
      const s = smp.samples || [];
      clear(tenantBox);
      if (tsmp) {
        const ts = tsmp.samples || [];
        put(tenantBox, el("h2", {}, "Tenant " + picked + " ", el("a", { href: "#/overview", class: "muted" }, "(close)")),
          el("div", { class: "grid" },
            chart("Events / s", ts, "events_per_sec", "ev/s"),
            chart("fsync latency (ms, mean per second)", ts, "fsync_ms", "ms"),
            chart("Writer queue", ts, "queue_len", "waiting", null, null, 0),
            chart("Policy denials / s", ts, "denied_per_sec", "/s")));
      }
      clear(serverBox);
      put(serverBox, chart("Events appended / s (all tenants)", s, "events_per_sec", "ev/s"),
        chart("Append latency (ms)", s, "append_p50_ms", "ms p50", "append_p99_ms", "p99"),
        chart("fsyncs / s", s, "fsyncs_per_sec", "/s"));
      const last = ov.server || {};
      const rows = ov.tenants.map((t) => {
        const frac = t.storage_quota > 0 ? t.storage_bytes / t.storage_quota : 0;
        const suspended = t.state === "suspended";
        const btn = suspended
          ? el("button", { type: "button", class: "secondary", "data-tenant": t.id, onclick: () => act(t.id, "resume") }, "Resume")
          : el("button", { type: "button", class: "danger", "data-tenant": t.id, onclick: () => act(t.id, "suspend") }, "Suspend");
        btn.setAttribute("aria-label", (suspended ? "Resume " : "Suspend ") + "tenant " + t.id);
        const health = [];
        if (t.plugins_quarantined) health.push(status(false, "", t.plugins_quarantined + " plugin(s) quarantined"));
        if (t.plugins_not_loaded) health.push(status(false, "", t.plugins_not_loaded + " plugin(s) not loaded", true));
        if (!health.length) health.push(status(true, t.plugins ? t.plugins + " plugin(s) healthy" : "no plugins"));
        return el("tr", { "data-tenant": t.id },
          el("th", { scope: "row" }, el("a", { href: "#/overview?tenant=" + encodeURIComponent(t.id), "aria-label": "figures of tenant " + t.id,
            "aria-current": t.id === picked ? "true" : false }, t.id)),
          el("td", {}, status(!suspended, "active", "suspended" + (t.suspend_reason ? ": " + t.suspend_reason : ""))),
          el("td", { class: "num" }, num(t.events_per_sec, 1) + (t.rate_shared ? " (shared)" : "")),
          el("td", { class: "num" }, num(t.events)),
          el("td", { class: "num" }, num(t.subscriptions)),
          el("td", { class: "storage" }, meter(frac, Math.round(frac * 100) + "% of storage quota"), " ",
            bytes(t.storage_bytes) + " of " + (t.storage_quota > 0 ? bytes(t.storage_quota) : "unlimited") + " (" + (frac * 100).toFixed(1) + "%)"),
          el("td", {}, t.policy_active ? el("code", {}, t.policy_active.slice(0, 12)) : el("span", { class: "muted" }, "none")),
          el("td", {}, health),
          el("td", {}, btn));
      });
      clear(table);
      put(table, 
        el("p", { class: "muted" }, "Open event streams now: " + num(last.subscriptions) + " · tenants shown " + ov.shown + " of " + ov.total + " · updated every 2 s"),
        ov.shown < ov.total ? el("p", { class: "notice" }, "Only the first " + ov.shown + " tenants are listed.") : null,
        el("table", { id: "tenant-table" },
          el("caption", { class: "muted" }, "Tenants: write rate, open event streams, storage against quota, policy and plugin health"),
          el("thead", {}, el("tr", {}, ["Tenant", "State", "Events/s", "Events", "Streams", "Storage", "Policy", "Plugins", ""].map((h, i) =>
            el("th", { scope: "col", class: i >= 2 && i <= 4 ? "num" : false }, h)))),
          el("tbody", {}, rows)));
    };
    async function act(id, what) {
      try {
        await api("POST", "/v1/admin/tenants/" + encodeURIComponent(id) + "/" + what, what === "suspend" ? { reason: "suspended from the console" } : undefined);
        toast("Tenant " + id + (what === "suspend" ? " suspended" : " resumed"));
        await refresh();
      } catch (e) { toast(e.message); }
    }
    await repeat(refresh, 2000);
  }

  // ---------- tenant dashboard ----------
  async function dashboardPage(main) {
    document.title = "Dashboard · batpak console";
    main.appendChild(el("h1", {}, "Tenant " + me.tenant));
    const facts = el("div", { class: "panel", id: "facts" });
    const charts = el("div", { class: "grid", id: "charts" });
    put(main, facts, charts);
    const refresh = async () => {
      const [st, smp] = await Promise.all([api("GET", tpath("/stats")), call("GET", P + "/samples/tenants/" + encodeURIComponent(me.tenant))]);
      const s = smp.samples || [];
      const last = s.length ? s[s.length - 1] : {};
      const q = st.quotas || {};
      const frac = q.storage_bytes > 0 ? st.bytes / q.storage_bytes : 0;
      clear(facts);
      put(facts, el("dl", { class: "fields" },
        el("dt", {}, "Events"), el("dd", {}, num(st.events) + " in " + plural(st.entities, "entity", "entities") + ", " + plural(st.segments, "segment", "segments")),
        el("dt", {}, "Storage"), el("dd", {}, meter(frac, Math.round(frac * 100) + "% of quota"), " " + bytes(st.bytes) + " of " + (q.storage_bytes ? bytes(q.storage_bytes) : "unlimited")),
        el("dt", {}, "Writer queue"), el("dd", {}, num(last.queue_len) + " waiting (capacity " + num(last.queue_cap) + ")"),
        el("dt", {}, "fsyncs"), el("dd", {}, num(st.fsyncs) + " since the store opened"),
        el("dt", {}, "Policy denials"), el("dd", {}, st.policy_decisions ? num(st.policy_decisions.denied) + " recorded" : "–"),
        el("dt", {}, "Cursors"), el("dd", {}, num(st.usage && st.usage.cursors))));
      clear(charts);
      put(charts, 
        chart("Events / s", s, "events_per_sec", "ev/s"),
        chart("fsync latency (ms, mean per second)", s, "fsync_ms", "ms"),
        chart("fsyncs / s", s, "fsyncs_per_sec", "/s"),
        chart("Writer queue", s, "queue_len", "waiting", null, null, 0),
        chart("Policy denials / s", s, "denied_per_sec", "/s"));
    };
    await refresh();
    const t = setInterval(() => refresh().catch(() => {}), 1000);
    cleanup.push(() => clearInterval(t));
  }

  // ---------- stream browser ----------
  function eventTable(evs, id) {
    return el("table", { id },
      el("thead", {}, el("tr", {}, ["Seq", "Entity", "Kind", "Clock", "Time", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, evs.map((e) => el("tr", { "data-id": e.id },
        el("td", { class: "num" }, String(e.global_sequence)),
        el("td", {}, el("a", { href: "#/streams?entity=" + encodeURIComponent(e.entity) }, e.entity)),
        el("td", {}, el("code", {}, kindName(e.kind))),
        el("td", { class: "num" }, String(e.clock)),
        el("td", { class: "mono" }, e.timestamp),
        el("td", {}, el("a", { href: "#/event?id=" + e.id, "aria-label": "detail of event " + e.global_sequence }, "detail"), " · ",
          el("a", { href: "#/graph?id=" + e.id, "aria-label": "causal graph of event " + e.global_sequence }, "graph"))))));
  }
  function kindName(k) { return typeof k === "string" ? k : String(k); }
  async function streamsPage(main, query) {
    document.title = "Streams · batpak console";
    const prefix = query.get("prefix") || "";
    const scope = query.get("scope") || "";
    const entity = query.get("entity") || "";
    main.appendChild(el("h1", {}, entity ? "Stream " + entity : "Streams"));
    const pIn = el("input", { id: "prefix", name: "prefix", value: prefix, placeholder: "order:" });
    const sIn = el("input", { id: "scope", name: "scope", value: scope, placeholder: "(any)" });
    main.appendChild(el("form", { class: "panel row", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      if (pIn.value) q.set("prefix", pIn.value);
      if (sIn.value) q.set("scope", sIn.value);
      go("#/streams?" + q);
    } }, el("label", { for: "prefix" }, "Entity prefix", pIn), el("label", { for: "scope" }, "Scope", sIn),
      el("button", { type: "submit" }, "Search")));
    if (entity) {
      const after = query.get("after_clock");
      const page = await api("GET", tpath("/entities/" + encodeURIComponent(entity) + "/events?limit=50" + (after ? "&after_clock=" + encodeURIComponent(after) : "")));
      const evs = page.events;
      main.appendChild(el("p", { class: "muted" }, evs.length ? "Clocks " + evs[0].clock + "–" + evs[evs.length - 1].clock : "No events" + (after ? " after clock " + after : "") + "."));
      main.appendChild(eventTable(evs, "stream-events"));
      const nav = el("p", { class: "row" });
      if (after) nav.appendChild(el("a", { href: "#/streams?entity=" + encodeURIComponent(entity) }, "⏮ First page"));
      // The server says where the next page starts (a page may hold
      // fewer than asked before the stream's end).
      if (page.next_after_clock !== null && page.next_after_clock !== undefined) nav.appendChild(el("a", { id: "next-page", href: "#/streams?entity=" + encodeURIComponent(entity) + "&after_clock=" + page.next_after_clock }, "Next page ⏭"));
      main.appendChild(nav);
      return;
    }
    // Entities by prefix: the entities of the matching events, in order
    // of their first event (bounded by one page of events).
    const q = new URLSearchParams({ limit: "1000" });
    if (prefix) q.set("entity", prefix);
    if (scope) q.set("scope", scope);
    const page = await api("GET", tpath("/events?" + q));
    const seen = new Map();
    for (const e of page.events) {
      const c = seen.get(e.entity) || { n: 0, last: e };
      c.n++; c.last = e;
      seen.set(e.entity, c);
    }
    main.appendChild(el("h2", {}, seen.size + " entit" + (seen.size === 1 ? "y" : "ies") + (prefix ? " starting with “" + prefix + "”" : "")));
    if (page.next_after !== null && page.next_after !== undefined)
      main.appendChild(el("p", { class: "notice" }, "Only part of the log was scanned (the first 1000 matching events, or a page's share of the log); narrow the prefix to see more entities."));
    main.appendChild(el("table", { id: "entities" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Entity"), el("th", { scope: "col", class: "num" }, "Events seen"), el("th", { scope: "col" }, "Latest kind"))),
      el("tbody", {}, [...seen.entries()].map(([name, c]) => el("tr", {},
        el("td", {}, el("a", { href: "#/streams?entity=" + encodeURIComponent(name) }, name)),
        el("td", { class: "num" }, String(c.n)),
        el("td", {}, el("code", {}, kindName(c.last.kind))))))));
  }

  async function eventPage(main, query) {
    const id = query.get("id") || "";
    document.title = "Event · batpak console";
    main.appendChild(el("h1", {}, "Event"));
    // The payload is shown and saved from the answer's text: parsed, its
    // numbers would be doubles (9007199254740993 read as …992, 1e400 as
    // null, -0 as 0, 1.0 as 1).
    const { data: e, text } = await request("GET", P + "/api" + tpath("/events/" + encodeURIComponent(id)));
    const chain = el("dd", { id: "chain" }, e.redacted ? status(false, "", "redacted (payload removed; link kept)", true) : el("span", { class: "muted" }, "not checked"));
    const verifyBtn = el("button", { type: "button", id: "verify-chain", class: "secondary", onclick: async () => {
      verifyBtn.disabled = true;
      clear(chain); put(chain, "checking…");
      try {
        const v = await api("POST", tpath("/verify"));
        clear(chain);
        put(chain, v.ok ? status(true, "verified (the whole store's chain: " + plural(v.events, "event", "events") + ", " + plural(v.segments, "segment", "segments") + ")")
          : status(false, "", "broken: " + v.error));
        if (e.redacted) put(chain, " · ", status(false, "", "this event is redacted", true));
      } catch (err) { clear(chain); put(chain, el("span", { class: "error" }, err.message)); }
      verifyBtn.disabled = false;
    } }, "Verify chain");
    const f = (k, v) => [el("dt", {}, k), el("dd", { class: "mono" }, v === null || v === undefined || v === "" ? "–" : String(v))];
    put(main, el("div", { class: "panel" }, el("dl", { class: "fields", id: "event-fields" },
      f("id", e.id), f("entity", e.entity), f("scope", e.scope), f("kind", kindName(e.kind)), f("clock", e.clock),
      f("global sequence", e.global_sequence), f("time", e.timestamp), f("correlation", e.correlation_id),
      f("causation", e.causation_id), f("idempotency key", e.idempotency_key), f("flags", e.flags),
      el("dt", {}, "chain link"), chain)),
      el("p", { class: "row" }, verifyBtn, el("a", { href: "#/graph?id=" + e.id }, "Causal graph of this event"),
        e.causation_id ? el("a", { href: "#/event?id=" + e.causation_id }, "Its cause") : null,
        el("a", { href: "#/streams?entity=" + encodeURIComponent(e.entity) }, "Its stream")),
      el("h2", {}, "Payload"), e.redacted ? el("pre", { id: "payload" }, "(redacted)") : payloadView(jsonMember(text, "payload"), e.payload, "event-" + e.id + ".json"));
  }

  // ---------- causal graph ----------
  const GRAPH_LIMIT = 100;
  async function graphPage(main, query) {
    const id = query.get("id") || "";
    document.title = "Causal graph · batpak console";
    main.appendChild(el("h1", {}, "Causal graph"));
    const [anc, desc, corr] = await Promise.all([
      api("GET", tpath("/events/" + encodeURIComponent(id) + "/ancestors?limit=" + GRAPH_LIMIT)),
      api("GET", tpath("/events/" + encodeURIComponent(id) + "/descendants?limit=" + GRAPH_LIMIT)),
      api("GET", tpath("/events/" + encodeURIComponent(id) + "/correlation?limit=" + GRAPH_LIMIT))]);
    const nodes = new Map();
    const add = (e, role) => { if (!nodes.has(e.id)) nodes.set(e.id, Object.assign({ role }, e)); };
    anc.events.forEach((e) => add(e, "ancestor"));
    desc.events.forEach((e) => add(e, "descendant"));
    corr.events.forEach((e) => add(e, "correlated"));
    const truncated = desc.truncated || corr.truncated || anc.events.length >= GRAPH_LIMIT;
    const focus = nodes.get(id);
    if (focus) focus.role = "focus";
    const list = [...nodes.values()].sort((a, b) => a.global_sequence - b.global_sequence);
    // Layers: an event one to the right of its cause (causes come first in
    // global order); events whose cause is not shown start a column 0.
    const layer = new Map();
    for (const n of list) {
      const p = n.causation_id && layer.has(n.causation_id) ? layer.get(n.causation_id) + 1 : 0;
      layer.set(n.id, p);
    }
    const cols = [];
    for (const n of list) { const l = layer.get(n.id); (cols[l] = cols[l] || []).push(n); }
    // A layer taller than ROWS events wraps into several columns.
    const NW = 210, NH = 46, GX = 70, GY = 18, M = 16, ROWS = 10;
    const pos = new Map();
    let x = M, rowsUsed = 1;
    for (const c of cols) {
      if (!c) continue;
      c.forEach((n, j) => pos.set(n.id, { x: x + Math.floor(j / ROWS) * (NW + GX / 2), y: M + (j % ROWS) * (NH + GY), sub: Math.floor(j / ROWS) }));
      x += Math.ceil(c.length / ROWS) * (NW + GX / 2) + GX / 2;
      rowsUsed = Math.max(rowsUsed, Math.min(ROWS, c.length));
    }
    const W = x - GX + M * 2;
    const H = M * 2 + rowsUsed * (NH + GY) - GY;
    const edges = list.filter((n) => n.causation_id && pos.has(n.causation_id)).map((n) => [n.causation_id, n.id]);
    const g = svg("svg", { class: "graph", id: "graph", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "group",
      "aria-label": "Causal graph: " + list.length + " events, " + edges.length + " causation links" },
      svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))));
    for (const [from, to] of edges) {
      const a = pos.get(from), b = pos.get(to);
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
      // An effect in a wrapped column is reached over the top margin and
      // down the gap before its column, behind the other boxes.
      const d = b.sub > 0 && x2 > x1
        ? "M " + x1 + " " + y1 + " H " + (x1 + 8) + " V " + (M / 2) + " H " + (x2 - 12) + " V " + y2 + " H " + x2
        : "M " + x1 + " " + y1 + " C " + mx + " " + y1 + ", " + mx + " " + y2 + ", " + x2 + " " + y2;
      g.appendChild(svg("path", { class: "edge", "data-from": from, "data-to": to, "marker-end": "url(#arrow)", d }));
    }
    const roleText = { focus: "this event", ancestor: "cause", descendant: "effect", correlated: "same correlation" };
    for (const n of list) {
      const p = pos.get(n.id);
      const label = kindName(n.kind) + " " + n.entity + " (" + roleText[n.role] + ", seq " + n.global_sequence + ")";
      const node = svg("g", { class: "node " + (n.role === "focus" ? "focus" : n.role === "correlated" ? "corr" : ""), tabindex: 0, role: "link",
        "data-id": n.id, "data-entity": n.entity, "data-kind": kindName(n.kind), "aria-label": label,
        transform: "translate(" + p.x + "," + p.y + ")" },
        svg("title", {}, label),
        svg("rect", { width: NW, height: NH, rx: 4 }),
        svg("text", { class: "kind", x: 8, y: 18 }, (n.role === "focus" ? "● " : "") + kindName(n.kind) + "  ·  " + roleText[n.role]),
        svg("text", { x: 8, y: 36 }, trunc(n.entity, 26) + "  #" + n.clock));
      const open = () => go("#/graph?id=" + n.id);
      node.addEventListener("click", open);
      node.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); open(); } });
      g.appendChild(node);
    }
    put(main, 
      el("p", { class: "legend" }, "Arrows point from a cause to its effect. ● marks the event shown; dashed boxes share its correlation id without a causation link shown. Click a node, or focus it with Tab and press Enter, to move to it."),
      truncated ? el("p", { class: "notice", id: "truncated" }, "Truncated: this graph shows at most " + GRAPH_LIMIT + " ancestors, descendants and correlated events each; more exist.") : null,
      el("div", { class: "graph-wrap" }, g),
      el("p", { class: "row" }, el("a", { href: "#/event?id=" + id }, "Event detail"),
        focus ? el("a", { href: "#/streams?entity=" + encodeURIComponent(focus.entity) }, "Stream " + focus.entity) : null));
  }
  function faultText(f) {
    // The kind, then the message (the fault's JSON when it has none), then
    // when it happened.
    return (f.kind || "fault") + ": " + (f.message ? trunc(f.message, 140) : jsonShort(f, 140)) + (f.time ? " (" + f.time + ")" : "");
  }
  function trunc(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  // jsonText writes v as JSON.stringify(v, null, indent) does (indent 0:
  // compact) but stops once the text would pass limit characters:
  // {text, whole}, whole when text is all of it, else text is its first
  // limit characters. Work and memory stay within the smaller of v's size
  // and limit, however deep v nests: indented, each level adds indent
  // spaces to every line below it, so a small deep payload would make a
  // text of hundreds of millions of characters. Its own stack, not the
  // call stack, so no depth overflows it.
  function jsonText(v, indent, limit) {
    const out = [];
    let n = 0;
    const put = (s) => {
      if (n + s.length > limit) { out.push(s.slice(0, limit - n)); return false; }
      out.push(s); n += s.length; return true;
    };
    const nl = (d) => (indent ? "\n" + " ".repeat(indent * d) : "");
    const stack = [];
    let cur = v;
    write: for (;;) {
      if (cur !== null && typeof cur === "object") {
        const keys = Array.isArray(cur) ? null : Object.keys(cur);
        const len = keys ? keys.length : cur.length;
        if (!put(keys ? "{" : "[")) break;
        if (len === 0) { if (!put(keys ? "}" : "]")) break; }
        else stack.push({ o: cur, keys, len, i: 0 });
      } else if (!put(JSON.stringify(cur) ?? "null")) break;
      // The next value to write, closing the containers done.
      for (;;) {
        const f = stack[stack.length - 1];
        if (!f) return { text: out.join(""), whole: true };
        if (f.i < f.len) {
          let s = (f.i ? "," : "") + nl(stack.length);
          if (f.keys) s += JSON.stringify(f.keys[f.i]) + (indent ? ": " : ":");
          if (!put(s)) break write;
          cur = f.keys ? f.o[f.keys[f.i]] : f.o[f.i];
          f.i++;
          continue write;
        }
        stack.pop();
        if (!put(nl(stack.length) + (f.keys ? "}" : "]"))) break write;
      }
    }
    return { text: out.join(""), whole: false };
  }
  // jsonShort is v's compact JSON cut to n characters (… marks a cut).
  function jsonShort(v, n) {
    const j = jsonText(v, 0, n);
    return j.whole ? j.text : j.text.slice(0, n - 1) + "…";
  }
  // JSON text, read as text: the payload of an answer is taken from the
  // answer's text and re-indented token by token, so its numbers, string
  // escapes and key order stay as stored (JSON.parse would turn
  // 12345678901234567890123 into 1.2345678901234568e+22, 9007199254740993
  // into …992, 1e400 into null, -0 into 0, 1.0 into 1). The text comes
  // from the server, which checked it is JSON; these readers only find
  // where each token ends.
  const isSpace = (c) => c === " " || c === "\n" || c === "\r" || c === "\t";
  function skipSpace(s, i) { while (i < s.length && isSpace(s[i])) i++; return i; }
  // stringEnd is the index past the string starting at s[i] (a quote), or
  // s.length when it does not end.
  function stringEnd(s, i) {
    for (i++; i < s.length; i++) {
      const c = s[i];
      if (c === "\\") i++;
      else if (c === '"') return i + 1;
    }
    return s.length;
  }
  // scalarEnd is the index past the number or literal starting at s[i].
  function scalarEnd(s, i) {
    for (i++; i < s.length; i++) {
      const c = s[i];
      if (c === "," || c === ":" || c === "]" || c === "}" || c === "[" || c === "{" || c === '"' || isSpace(c)) break;
    }
    return i;
  }
  // valueEnd is the index past the JSON value starting at s[i].
  function valueEnd(s, i) {
    let depth = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === '"') i = stringEnd(s, i);
      else if (c === "{" || c === "[") { depth++; i++; }
      else if (c === "}" || c === "]") { depth--; i++; }
      else if (c === "," || c === ":" || isSpace(c)) { i++; continue; }
      else i = scalarEnd(s, i);
      if (depth <= 0) return i;
    }
    return i;
  }
  // jsonMember is the text of the value named key in the JSON object text
  // s (the first such member), or null when s is not an object holding it.
  function jsonMember(s, key) {
    if (typeof s !== "string") return null;
    let i = skipSpace(s, 0);
    if (s[i] !== "{") return null;
    i = skipSpace(s, i + 1);
    while (s[i] === '"') {
      const k = stringEnd(s, i);
      let name;
      try { name = JSON.parse(s.slice(i, k)); } catch (err) { return null; }
      i = skipSpace(s, k);
      if (s[i] !== ":") return null;
      const v = skipSpace(s, i + 1);
      const end = valueEnd(s, v);
      if (end <= v) return null;
      if (name === key) return s.slice(v, end);
      i = skipSpace(s, end);
      if (s[i] !== ",") return null;
      i = skipSpace(s, i + 1);
    }
    return null;
  }
  // rawText is the JSON text s written as JSON.stringify(JSON.parse(s),
  // null, indent) lays it out (indent 0: compact), each number, string and
  // literal as s writes it, the members in s's order; it stops once the
  // text would pass limit characters: {text, whole} as jsonText. Work and
  // memory stay within the smaller of s's length and limit, however deep
  // s nests (no stack: only the depth is counted).
  function rawText(s, indent, limit) {
    const out = [];
    let n = 0;
    const put = (t) => {
      if (n + t.length > limit) { out.push(t.slice(0, limit - n)); return false; }
      out.push(t); n += t.length; return true;
    };
    const nl = (d) => (indent ? "\n" + " ".repeat(indent * d) : "");
    let d = 0, i = 0;
    while (i < s.length) {
      const c = s[i];
      let t;
      if (isSpace(c)) { i++; continue; }
      if (c === '"') { const j = stringEnd(s, i); t = s.slice(i, j); i = j; }
      else if (c === "{" || c === "[") {
        const j = skipSpace(s, i + 1);
        if (s[j] === (c === "{" ? "}" : "]")) { t = c + s[j]; i = j + 1; } // empty: {} or []
        else { d++; t = c + nl(d); i++; }
      } else if (c === "}" || c === "]") { d = Math.max(0, d - 1); t = nl(d) + c; i++; }
      else if (c === ",") { t = "," + nl(d); i++; }
      else if (c === ":") { t = indent ? ": " : ":"; i++; }
      else { const j = scalarEnd(s, i); t = s.slice(i, j); i = j; }
      if (!put(t)) return { text: out.join(""), whole: false };
    }
    return { text: out.join(""), whole: true };
  }
  // rawShort is the JSON text s compact, cut to n characters (… marks a cut).
  function rawShort(s, n) {
    const j = rawText(s, 0, n);
    return j.whole ? j.text : j.text.slice(0, n - 1) + "…";
  }
  // PRETTY_MAX bounds the text a payload is shown as (characters).
  const PRETTY_MAX = 256 * 1024;
  // payloadView shows a payload, from raw, its JSON text in the API's
  // answer: indented when that text stays within PRETTY_MAX; else compact,
  // cut at PRETTY_MAX, with a button showing it all (compact: as large as
  // the payload). Download JSON saves raw itself. Without raw (an answer
  // this page could not read it from) the parsed value v is shown and
  // saved, marked approximate.
  function payloadView(raw, v, name) {
    const exact = typeof raw === "string";
    if (!exact) raw = JSON.stringify(v) ?? "null";
    const approx = exact ? null : el("p", { class: "notice", id: "payload-approx" },
      "Approximate: read as JavaScript numbers, so integers past 2^53 and other numbers a double does not hold exactly may differ from the stored payload.");
    const pretty = rawText(raw, 2, PRETTY_MAX);
    const download = el("button", { type: "button", id: "payload-download", class: "secondary", onclick: () => {
      const url = URL.createObjectURL(new Blob([raw], { type: "application/json" }));
      const a = el("a", { href: url, download: name, hidden: true });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } }, "Download JSON");
    if (pretty.whole) return [approx, el("p", { class: "row" }, download), el("pre", { id: "payload" }, pretty.text)];
    const compact = rawText(raw, 0, PRETTY_MAX);
    const pre = el("pre", { id: "payload", class: "wrap" }, compact.text + (compact.whole ? "" : "…"));
    const note = el("p", { class: "notice", id: "payload-note" }, compact.whole
      ? "Shown compact: indented, this payload would pass " + bytes(PRETTY_MAX) + " of text."
      : "Shown compact and cut at " + bytes(PRETTY_MAX) + " of text: show it all, or download it.");
    const showAll = compact.whole ? null : el("button", { type: "button", id: "payload-all", class: "secondary", onclick: () => {
      pre.textContent = rawText(raw, 0, Infinity).text;
      showAll.remove();
      note.textContent = "Shown compact, all of it.";
    } }, "Show all");
    return [approx, note, el("p", { class: "row" }, showAll, download), pre];
  }

  // ---------- live tail ----------
  async function tailPage(main, query) {
    document.title = "Live tail · batpak console";
    main.appendChild(el("h1", {}, "Live tail"));
    const eIn = el("input", { id: "tail-entity", value: query.get("entity") || "", placeholder: "(every entity)" });
    const sIn = el("input", { id: "tail-scope", value: query.get("scope") || "", placeholder: "(any)" });
    const kIn = el("input", { id: "tail-kind", value: query.get("kind") || "", placeholder: "1:1", size: 8 });
    const state = el("span", { id: "tail-state", class: "status" });
    const pause = el("button", { type: "button", id: "tail-pause", "aria-pressed": "false" }, "Pause");
    const body = el("tbody", { id: "tail-body" });
    put(main, el("form", { class: "panel row", onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      if (eIn.value) q.set("entity", eIn.value);
      if (sIn.value) q.set("scope", sIn.value);
      if (kIn.value) q.set("kind", kIn.value);
      go("#/tail?" + q);
    } }, el("label", { for: "tail-entity" }, "Entity prefix", eIn), el("label", { for: "tail-scope" }, "Scope", sIn),
      el("label", { for: "tail-kind" }, "Kind", kIn), el("button", { type: "submit" }, "Follow"), pause, state),
      el("div", { class: "tail-list panel" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Seq", "Entity", "Kind", "Time", "Payload"].map((h) => el("th", { scope: "col" }, h)))), body)));
    const st = await api("GET", tpath("/stats"));
    let last = st.global_sequence > 0 ? st.global_sequence - 1 : null; // follow from now
    let es = null, paused = false;
    // A stream cut off for being behind (or ended to be resumed, or by
    // a server going down) is opened again after the last event shown,
    // a second later, then waiting twice as long each time up to 5 tries
    // in a row; an event shown starts the count again.
    let resumeTimer = null, tries = 0;
    const setState = (ok, text) => { clear(state); state.append(status(ok, text, text, !ok)); };
    const stopResume = () => { if (resumeTimer) clearTimeout(resumeTimer); resumeTimer = null; };
    function open() {
      const q = new URLSearchParams();
      if (eIn.value) q.set("entity", eIn.value);
      if (sIn.value) q.set("scope", sIn.value);
      if (kIn.value) q.set("kind", kIn.value);
      if (last !== null) q.set("after", String(last));
      es = new EventSource(P + "/api" + tpath("/subscribe?" + q));
      es.onopen = () => setState(true, "following");
      es.addEventListener("event", (m) => {
        const e = JSON.parse(m.data);
        last = e.global_sequence;
        tries = 0;
        for (const r of body.querySelectorAll("tr.fresh")) r.classList.remove("fresh");
        body.insertBefore(el("tr", { class: "fresh", "data-id": e.id },
          el("td", { class: "num" }, String(e.global_sequence)),
          el("td", {}, el("a", { href: "#/event?id=" + e.id }, e.entity)),
          el("td", {}, el("code", {}, kindName(e.kind))),
          el("td", { class: "mono" }, e.timestamp),
          el("td", { class: "mono" }, rawShort(jsonMember(m.data, "payload") ?? JSON.stringify(e.payload) ?? "null", 120))), body.firstChild);
        while (body.children.length > 200) body.removeChild(body.lastChild);
      });
      const ended = (m) => {
        let why = "";
        try { why = JSON.parse(m.data).reason || ""; } catch (e) { /* no reason */ }
        es.close(); es = null;
        const resumable = m.type === "shutdown" || why === "slow consumer" || why.startsWith("the stream ended");
        if (resumable && !paused && tries < 5) {
          const wait = 1000 << tries++;
          setState(false, "cut off" + (why ? ": " + why : "") + "; resuming after seq " + (last === null ? "–" : last) + " in " + (wait / 1000) + " s");
          stopResume();
          resumeTimer = setTimeout(() => { resumeTimer = null; if (!paused && !es) open(); }, wait);
          return;
        }
        setState(false, "stopped" + (why ? ": " + why : ""));
      };
      es.addEventListener("cutoff", ended);
      es.addEventListener("shutdown", ended);
      es.onerror = () => {
        if (!es) return;
        if (es.readyState === EventSource.CONNECTING) setState(false, "reconnecting…");
        else { es.close(); es = null; setState(false, "stopped: the server refused the stream (signed out, or the key lost access)"); }
      };
    }
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      if (paused) { stopResume(); if (es) es.close(); es = null; setState(false, "paused (new events are not lost: resuming continues after seq " + (last === null ? "–" : last) + ")"); }
      else { tries = 0; if (!es) open(); }
    });
    open();
    cleanup.push(() => { stopResume(); if (es) es.close(); });
  }

  // ---------- policies ----------
  async function policiesPage(main) {
    document.title = "Policies · batpak console";
    main.appendChild(el("h1", {}, "Policies"));
    const pol = await api("GET", tpath("/policy")).catch((e) => ({ error: e.message }));
    const box = el("div", { class: "panel", id: "policy-active" });
    if (pol.error) put(box, el("p", { class: "error" }, pol.error));
    else {
      put(box, el("p", {}, "Active revision: ", pol.active ? el("code", {}, pol.active) : el("span", { class: "muted" }, "none (the tenant layer admits every valid write)"),
        pol.activated ? " · since " + pol.activated : ""));
      const revs = pol.revisions || [];
      put(box, el("h2", {}, "History"), revs.length ? el("table", { id: "policy-history" },
        el("thead", {}, el("tr", {}, ["Revision", "Uploaded", "By", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, revs.slice().reverse().map((r) => el("tr", {},
          el("td", {}, el("code", {}, (r.revision || "").slice(0, 16))),
          el("td", { class: "mono" }, r.uploaded || "–"),
          el("td", {}, (r.by && (r.by.id || r.by.ID)) || "–"),
          el("td", {}, r.revision === pol.active ? status(true, "active") : ""))))) : el("p", { class: "muted" }, "No bundle was ever uploaded."));
    }
    put(main, box);
    // Decisions (admin keys only).
    const dec = el("div", { class: "panel", id: "policy-denials" }, el("h2", {}, "Recent denials"));
    put(main, dec);
    try {
      const d = await api("GET", tpath("/policy/decisions?result=denied&limit=20"));
      const ds = d.decisions || [];
      put(dec, ds.length ? el("table", {},
        el("thead", {}, el("tr", {}, ["Time", "Layer", "Action", "Input read", "Reasons"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ds.map((x) => el("tr", {},
          el("td", { class: "mono" }, x.time), el("td", {}, x.layer), el("td", {}, x.action),
          el("td", { class: "mono" }, x.input ? jsonShort(x.input, 100) : "–"),
          el("td", {}, (x.reasons || []).map((r) => el("div", {}, status(false, "", r.code), " " + r.message))))))) : el("p", { class: "muted" }, "No denials recorded."));
    } catch (e) {
      put(dec, el("p", { class: "muted" }, e.status === 403 ? "The decision log needs an admin key." : e.message));
    }
    // Evaluate.
    const ent = el("input", { id: "eval-entity", value: "order:1", required: true });
    const scope = el("input", { id: "eval-scope", value: "shop", required: true });
    const kind = el("input", { id: "eval-kind", value: "1:1", size: 8, required: true });
    const action = el("select", { id: "eval-action" }, ["append", "batch", "reaction", "import"].map((a) => el("option", { value: a }, a)));
    const payload = el("textarea", { id: "eval-payload", spellcheck: "false" }, '{"total": 10}');
    const out = el("div", { id: "eval-result", role: "status" });
    put(main, el("form", { class: "panel", onsubmit: async (ev) => {
      ev.preventDefault();
      clear(out);
      let pl;
      try { pl = JSON.parse(payload.value || "null"); } catch (e) { put(out, el("p", { class: "error" }, "The payload is not JSON: " + e.message)); return; }
      try {
        const r = await call("POST", P + "/tenants/" + encodeURIComponent(me.tenant) + "/policy/evaluate",
          { entity: ent.value, scope: scope.value, kind: kind.value, action: action.value, payload: pl });
        const seen = el("p", { class: "muted" }, r.entity && r.entity.exists ?
          "Judged with the entity at clock " + r.entity.clock + " (its latest event now)." : "Judged with the entity having no events yet.");
        if (r.result === "allowed") put(out, status(true, "allowed by revision " + r.revision.slice(0, 12)), seen);
        else if (r.result === "no_policy") put(out, status(true, "allowed: " + r.detail));
        else put(out, status(false, "", "denied by revision " + r.revision.slice(0, 12)),
          el("ul", {}, (r.reasons || []).map((x) => el("li", {}, el("code", {}, x.code), " " + x.message))), seen);
      } catch (e) { put(out, el("p", { class: "error" }, e.message)); }
    } }, el("h2", {}, "Evaluate this input"),
      el("p", { class: "muted" }, "Judges a write by the active tenant policy as your key, with the entity as it is now (input.entity), without writing or logging it."),
      el("div", { class: "row" }, el("label", { for: "eval-entity" }, "Entity", ent), el("label", { for: "eval-scope" }, "Scope", scope),
        el("label", { for: "eval-kind" }, "Kind", kind), el("label", { for: "eval-action" }, "Action", action)),
      el("label", { for: "eval-payload", class: "block" }, "Payload (JSON)", payload),
      el("p", {}, el("button", { type: "submit", id: "eval-submit" }, "Evaluate")), out));
  }

  // ---------- plugins and workers ----------
  async function pluginsPage(main) {
    document.title = "Plugins & workers · batpak console";
    main.appendChild(el("h1", {}, "Plugins and workers"));
    const pbox = el("div", { class: "panel", id: "plugins" }, el("h2", {}, "Plugins"));
    const wbox = el("div", { class: "panel", id: "workers" }, el("h2", {}, "Hosted workers"));
    put(main, pbox, wbox);
    const reset = async (what, name) => {
      try { await api("POST", tpath("/" + what + "/" + encodeURIComponent(name) + "/reset")); toast(name + " reset"); route(); }
      catch (e) { toast(e.message); }
    };
    // The page reads again every 5 s (a plugin quarantined on some node, a
    // node that stops answering); an expanded list of faults stays open.
    const refresh = async () => {
      const pitems = [el("h2", {}, "Plugins")], witems = [el("h2", {}, "Hosted workers")];
      const open = new Set([...pbox.querySelectorAll("details[open]")].map((d) => d.id));
      try {
        const ps = (await api("GET", tpath("/plugins"))).plugins || [];
        if (!ps.length) pitems.push(el("p", { class: "muted" }, "No plugins uploaded."));
        for (const p of ps) {
          // Every node's part (on a cluster each node runs the plugin and
          // counts its own faults): quarantined anywhere shows here.
          // Asked one plugin at a time: a tenant gathers one such answer at
          // a time on a node.
          let st = null, unavailable = "";
          try { st = await api("GET", tpath("/plugins/" + encodeURIComponent(p.name) + "?nodes=all")); } catch (e) { unavailable = e.message; }
          const parts = (st && st.nodes) || [];
          const quarantined = st ? st.quarantined : p.quarantined;
          const loaded = st ? st.loaded : p.loaded;
          const loadError = (parts.find((n) => n.load_error) || {}).load_error;
          const many = parts.length > 1;
          const faults = parts.flatMap((n) => (n.faults || []).map((f) => ({ node: n.node, f })))
            .sort((a, b) => (Date.parse(a.f.time) || 0) - (Date.parse(b.f.time) || 0));
          const partText = (n) => n.node + ": " + (n.error ? n.error : n.quarantined ? "quarantined" : n.loaded ? "loaded" : "not loaded") +
            (n.error ? "" : ", " + plural(n.stats.calls, "call", "calls") + ", " + plural(n.stats.faults, "fault", "faults"));
          pitems.push(el("div", { class: "panel", id: "plugin-" + p.name },
            el("div", { class: "row" }, el("strong", {}, p.name), el("span", { class: "pill" }, p.kind),
              quarantined ? status(false, "", many ? "quarantined on " + parts.filter((n) => n.quarantined).map((n) => n.node).join(", ") : "quarantined")
                : loaded ? status(true, "loaded") : status(false, "", "not loaded" + (loadError ? ": " + loadError : ""), true),
              quarantined ? el("button", { type: "button", "data-plugin": p.name, onclick: () => reset("plugins", p.name) }, "Reset quarantine") : null),
            el("p", { class: "muted" }, "active version " + (p.active || "–") + " · " + plural(p.versions, "version", "versions") + " kept · digest ", el("code", {}, (p.digest || "").slice(0, 12)),
              st ? " · " + plural(st.stats.calls, "call", "calls") + ", " + plural(st.stats.faults, "fault", "faults") + (many ? " on " + plural(parts.length, "node", "nodes") : "") : ""),
            many ? el("ul", { class: "plugin-nodes" }, parts.map((n) => el("li", { class: n.error ? "mono warn" : "mono" }, partText(n)))) : null,
            st && st.unanswered ? el("p", { class: "warn" }, "Partial: " + st.answered + " of " + parts.length + " nodes answered; the state above is theirs.") : null,
            unavailable ? el("p", { class: "warn" }, "Every node's status is not available now (" + unavailable + "); this is the state of the node you are connected to.") : null,
            faults.length ? el("details", { id: "faults-" + p.name, open: open.has("faults-" + p.name) }, el("summary", {}, faults.length + " recent fault(s)"),
              el("ul", {}, faults.slice(-10).map((x) => el("li", { class: "mono" }, (many ? x.node + " " : "") + faultText(x.f))))) : null));
        }
      } catch (e) { pitems.push(el("p", { class: "muted" }, e.message)); }
      try {
        const ws = (await api("GET", tpath("/workers"))).workers || [];
        witems.push(ws.length ? el("table", {},
          el("thead", {}, el("tr", {}, ["Worker", "Plugin", "State", "Position", "Lag", "Faults and restarts", ""].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, ws.map((w) => el("tr", {},
            el("th", { scope: "row" }, w.name), el("td", {}, w.plugin),
            el("td", {}, w.state === "running" ? status(true, "running") : status(false, "", w.state + (w.quarantine ? " (quarantined)" : ""), w.state !== "quarantined")),
            el("td", { class: "num" }, num(w.position)), el("td", { class: "num", title: lagBound(w) ? "an upper bound: the log's events past the position, in the worker's region or not" : null }, (lagBound(w) ? "≤ " : "") + num(w.lag)),
            el("td", {}, (w.recent_faults || 0) + " recent, " + plural(w.restarts || 0, "restart", "restarts"),
              w.last_fault ? el("div", { class: "mono" }, "last: " + faultText(w.last_fault)) : null),
            el("td", {}, w.quarantine || w.state === "quarantined" ? el("button", { type: "button", onclick: () => reset("workers", w.name) }, "Reset") : null)))))
          : el("p", { class: "muted" }, "No hosted workers."));
      } catch (e) { witems.push(el("p", { class: "muted" }, e.message)); }
      clear(pbox); put(pbox, ...pitems);
      clear(wbox); put(wbox, ...witems);
    };
    await repeat(refresh, 5000);
  }

  // ---------- start ----------
  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    $("signout").addEventListener("click", signOut);
    route();
  });
})();
