// MetalBond status page: keeps the server-rendered page current by fetching
// the JSON API (/api/v1/...) instead of reloading. Read-only: GET only.
"use strict";
(() => {
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const form = $("search");
  const state = {
    vni: $("vni").value,
    q: $("q").value,
    offset: Number($("offset").value) || 0,
    limit: Number($("limit").value) || 100,
    paused: false,
    role: document.querySelector(".role").textContent.trim(),
  };
  let routeSeq = 0; // discards answers to superseded route queries
  let lastUpdate = Date.now();
  document.documentElement.classList.add("js");

  const fmt = new Intl.NumberFormat("en-US");
  const thousands = (n) => fmt.format(n);
  function duration(s) {
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
  }
  function bytes(n) {
    if (n === 0) return "0";
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
    return (n / (1 << 20)).toFixed(1) + " MiB";
  }
  // clock renders a timestamp as HH:MM:SS in the browser's time zone.
  const clock = (t) => new Date(t).toLocaleTimeString("en-GB", { hour12: false });
  const vniList = (v) => (v && v.length ? v.join(", ") : "–");

  // el builds an element; strings become text nodes, never HTML.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const td = (text, cls) => el("td", cls ? { class: cls } : null, text);
  function setText(id, text) {
    const e = $(id);
    if (e) e.textContent = text;
  }
  function fill(tbody, rows, cols, emptyText) {
    if (rows.length === 0) rows = [el("tr", { class: "empty" }, el("td", { colspan: String(cols) }, emptyText))];
    tbody.replaceChildren(...rows);
  }

  async function getJSON(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    return r.json();
  }

  function renderStatus(s) {
    const ready = $("ready");
    ready.textContent = s.ready ? "ready" : "not ready";
    ready.className = "pill " + (s.ready ? "ok" : "bad");
    ready.title = s.not_ready || "";
    setText("uptime", duration(s.uptime_seconds));
    setText("c-established", s.established);
    setText("c-peers", s.peers);
    setText("c-vnis", thousands(s.vnis));
    setText("c-routes", thousands(s.routes));
    if (s.server) {
      setText("c-upd-in", thousands(s.server.updates_received));
      setText("c-upd-out", thousands(s.server.updates_sent));
      setText("c-errors", Object.values(s.server.protocol_errors || {}).reduce((a, b) => a + b, 0));
      setText("c-slow", s.server.slow_peers_dropped);
    }
    if (s.client) {
      setText("c-installed", thousands(s.client.routes_installed));
      setText("c-announced", s.client.announcements);
      setText("c-subscribed", vniList(s.client.subscriptions));
    }
    if (s.installer) {
      setText("c-failing", s.installer.failing);
      setText("c-repairs", s.installer.repairs);
    }
  }

  function renderPeers(peers) {
    fill($("peers").tBodies[0], peers.map((p) => el("tr", null,
      td(p.id, "num"), td(p.remote, "mono"), td(p.name || p.identity || "–", "name"), td(p.direction),
      el("td", null, el("span", { class: "state s-" + p.state }, p.state),
        p.stale_until ? el("span", { class: "paced", title: thousands(p.held_routes) + " routes held for the peer's graceful restart" }, "held until " + clock(p.stale_until)) : null,
        p.paced ? el("span", { class: "paced", title: "plain v1 peer, writes paced; unread at most " + bytes(p.backlog_bytes) }, "paced") : null),
      td(p.established_at ? duration(p.uptime_seconds) : "–", "num"),
      td(p.keepalive_seconds ? p.keepalive_seconds + "s" : "–", "num"),
      td(vniList(p.subscriptions)),
      td(thousands(p.routes), "num"), td(thousands(p.updates_received), "num"),
      td(thousands(p.updates_sent), "num"), td(bytes(p.queue_bytes), "num"),
    )), 12, "No peers.");
  }

  function renderVNIs(vnis) {
    const server = state.role === "server";
    fill($("vnis").tBodies[0], vnis.map((v) => {
      const a = el("a", { href: "?vni=" + v.vni, "data-vni": String(v.vni) }, v.vni);
      const tr = el("tr", String(v.vni) === state.vni ? { class: "selected" } : null,
        el("td", { class: "num" }, a), td(thousands(v.routes), "num"), td(thousands(v.prefixes), "num"));
      if (server) tr.append(td(v.subscribers, "num"));
      return tr;
    }), 4, "No routes yet.");
    // Keep the VNI selector in step with the table.
    const sel = $("vni");
    const want = ["", ...vnis.map((v) => String(v.vni))];
    if (state.vni && !want.includes(state.vni)) want.push(state.vni);
    const have = Array.from(sel.options, (o) => o.value);
    if (want.join() !== have.join()) {
      sel.replaceChildren(...want.map((v) => el("option", { value: v }, v === "" ? "all" : v)));
    }
    sel.value = state.vni;
  }

  // peerRef renders a peer a route came from, as the server renders it.
  function peerRef(p) {
    let s = p.name ? p.name + " (" + p.remote + ")" : p.remote;
    if (p.held_until) s += " held until " + clock(p.held_until);
    return s;
  }

  function routeQuery() {
    const p = new URLSearchParams();
    if (state.vni) p.set("vni", state.vni);
    if (state.q) p.set("q", state.q);
    if (state.offset) p.set("offset", state.offset);
    if (state.limit !== 100) p.set("limit", state.limit);
    return p;
  }

  function renderRoutes(page) {
    fill($("routes").tBodies[0], page.routes.map((r) => el("tr", null,
      td(r.vni, "num"), td(r.prefix, "mono"), td(r.nexthop.address, "mono"),
      el("td", null, el("span", { class: "type t-" + r.nexthop.type }, r.nexthop.type)),
      td(r.nexthop.target_vni, "num"),
      td(r.nexthop.type === "NAT" ? r.nexthop.nat_port_from + "–" + r.nexthop.nat_port_to : "–", "num"),
      td(r.peers.map(peerRef).join(", "), "mono"),
    )), 7, "No matching routes.");
    const first = page.total === 0 ? 0 : page.offset + 1;
    const last = page.offset + page.routes.length;
    setText("range", page.total === 0 ? "no routes" : thousands(first) + "–" + thousands(last) + " of " + thousands(page.total));
    $("prev").classList.toggle("disabled", page.offset === 0);
    $("next").classList.toggle("disabled", last >= page.total);
  }

  async function refreshRoutes() {
    const seq = ++routeSeq;
    document.body.classList.add("loading");
    try {
      const page = await getJSON("api/v1/routes?" + routeQuery());
      if (seq !== routeSeq) return;
      // The table shrank under us: go back to its last page.
      if (page.routes.length === 0 && page.offset > 0 && page.total > 0) {
        state.offset = Math.floor((page.total - 1) / state.limit) * state.limit;
        return refreshRoutes();
      }
      renderRoutes(page);
    } finally {
      if (seq === routeSeq) document.body.classList.remove("loading");
    }
  }

  function navigate() {
    const qs = routeQuery().toString();
    history.replaceState(null, "", qs ? "?" + qs : location.pathname);
    for (const tr of $("vnis").tBodies[0].rows) {
      const a = tr.querySelector("a[data-vni]");
      tr.classList.toggle("selected", !!a && a.dataset.vni === state.vni);
    }
    refreshRoutes().catch(showError);
  }

  async function refreshAll() {
    const [status, peers, vnis] = await Promise.all([
      getJSON("api/v1/status"), getJSON("api/v1/peers"), getJSON("api/v1/vnis"), refreshRoutes(),
    ]);
    renderStatus(status);
    renderPeers(peers.peers);
    renderVNIs(vnis.vnis);
    lastUpdate = Date.now();
    setText("updated", "live");
  }

  function showError(err) {
    setText("updated", "refresh failed: " + err.message);
  }

  // Search as you type, debounced; Enter searches at once.
  let typing;
  $("q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.q = $("q").value.trim();
      state.offset = 0;
      navigate();
    }, 250);
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(typing);
    state.q = $("q").value.trim();
    state.offset = 0;
    navigate();
  });
  $("vni").addEventListener("change", () => {
    state.vni = $("vni").value;
    state.offset = 0;
    navigate();
  });
  $("limit").addEventListener("change", () => {
    state.limit = Number($("limit").value) || 100;
    state.offset = 0;
    navigate();
  });
  $("vnis").addEventListener("click", (e) => {
    const a = e.target.closest("a[data-vni]");
    if (!a) return;
    e.preventDefault();
    state.vni = a.dataset.vni;
    $("vni").value = state.vni;
    state.offset = 0;
    navigate();
  });
  $("prev").addEventListener("click", (e) => {
    e.preventDefault();
    state.offset = Math.max(0, state.offset - state.limit);
    navigate();
  });
  $("next").addEventListener("click", (e) => {
    e.preventDefault();
    state.offset += state.limit;
    navigate();
  });
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").classList.toggle("paused", state.paused);
    setText("updated", state.paused ? "paused" : "live");
    if (!state.paused) refreshAll().catch(showError);
  });

  setInterval(() => {
    if (state.paused || document.hidden) return;
    refreshAll().catch(showError);
  }, REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !state.paused && Date.now() - lastUpdate > REFRESH_MS) refreshAll().catch(showError);
  });
})();
