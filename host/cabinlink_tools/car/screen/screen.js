// CabinLink car screen: mirrors the reference car over one websocket (docs/tools/screen.md).
// Plain browser JavaScript, no library, no build step, nothing loaded from elsewhere.
"use strict";
(() => {
  const WINDOW_S = 120;          // seconds of history the charts show
  const KEEP_POINTS = 600;       // per attribute, as the car keeps
  const LOG_MAX = 120;           // lines in the events panel
  const TILE_EVENTS = 12;        // lines in a tile's event list
  const IDENTITY = new Set(["vendor", "product", "serial", "firmware_version", "hardware_version"]);
  // Friendlier first values for command arguments, by the registry's argument name.
  const ARG_DEFAULTS = { duration_s: 3, duration_ms: 40, strength: 80, reference_ppm: 420, rgb: 0xff8c00 };

  const S = {
    accs: new Map(),        // uid -> accessory dict (Accessory.to_dict)
    hist: new Map(),        // uid -> Map(path -> [[t, value], ...])
    tiles: new Map(),       // uid -> {el, sig, rows: Map(path -> tr), chartPath}
    units: {}, vehicle: {}, buses: [], ble: null, t: 0,
    busHist: [],            // [t, [load per bus]]
  };
  const pending = new Map(); // request id -> resolve
  let ws = null;
  let nextId = 1;
  let redrawTimer = null;
  const dirty = new Set();

  // --- small helpers ---------------------------------------------------------------------
  const $ = (sel, root = document) => root.querySelector(sel);
  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "cls") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function unitOf(u) { return (u && S.units[u]) || null; }
  function fmt(raw, unit) {
    if (raw === null || raw === undefined) return "–";
    const u = unitOf(unit);
    if (u && typeof raw === "number") {
      const digits = Math.round(Math.log10(u.scale));
      return (raw / u.scale).toFixed(digits) + u.suffix;
    }
    return String(raw) + (unit && !u && unit !== "count" ? " " + unit : "");
  }
  const fmtT = (t) => (typeof t === "number" ? t.toFixed(1) : "–");
  const isNumeric = (a) => (a.type === "int" || a.type === "uint") && !a.values;

  function setConn(state, text) {
    const c = $("#conn");
    c.dataset.state = state;
    c.textContent = text || state;
  }

  // --- the websocket ---------------------------------------------------------------------
  function connect() {
    setConn("connecting", "connecting…");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws`);
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      onMessage(msg);
    };
    ws.onclose = () => {
      setConn("offline", "car offline – reconnecting");
      for (const resolve of pending.values()) resolve({ ok: false, error: "connection lost" });
      pending.clear();
      setTimeout(connect, 1000);
    };
  }

  function send(op, fields = {}) {
    return new Promise((resolve) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        resolve({ ok: false, error: "not connected" });
        return;
      }
      const id = nextId++;
      pending.set(id, resolve);
      ws.send(JSON.stringify(Object.assign({ id, op }, fields)));
    });
  }

  function onMessage(m) {
    if (m.type === "hello") hello(m);
    else if (m.type === "event") onEvent(m.event);
    else if (m.type === "accessory") upsert(m.accessory);
    else if (m.type === "reply") {
      const resolve = pending.get(m.id);
      if (resolve) { pending.delete(m.id); resolve(m); }
    }
  }

  function hello(m) {
    const snap = m.snapshot;
    S.units = m.units || {};
    S.vehicle = snap.vehicle || {};
    S.buses = (snap.car && snap.car.can) || [];
    S.ble = snap.car ? snap.car.ble : null;
    S.t = snap.t || 0;
    S.accs.clear();
    S.hist.clear();
    for (const t of S.tiles.values()) t.el.remove();
    S.tiles.clear();
    for (const [uid, per] of Object.entries(m.history || {})) {
      S.hist.set(uid, new Map(Object.entries(per)));
    }
    for (const a of snap.accessories || []) upsert(a);
    $("#events").replaceChildren();
    for (const ev of m.events || []) {
      addLog(ev);
      if (ev.acc) addTileEvent(ev);
    }
    renderVehicle();
    renderBus();
    renderClock();
    setConn("live", "live");
  }

  // --- events ----------------------------------------------------------------------------
  function onEvent(ev) {
    if (typeof ev.t === "number" && ev.t > S.t) S.t = ev.t;
    const d = ev.data || {};
    if (ev.kind === "value") {
      const acc = S.accs.get(ev.acc);
      if (acc) {
        const vals = acc.values || (acc.values = []);
        const item = vals.find((v) => v.path === d.path);
        if (item) Object.assign(item, { value: d.value, text: d.text, t: ev.t });
        else vals.push({ slot: d.slot, attr: d.attr, path: d.path, value: d.value, text: d.text, t: ev.t });
        if (typeof d.value === "number") {
          if (!S.hist.has(ev.acc)) S.hist.set(ev.acc, new Map());
          const h = S.hist.get(ev.acc);
          if (!h.has(d.path)) h.set(d.path, []);
          const pts = h.get(d.path);
          pts.push([ev.t, d.value]);
          if (pts.length > KEEP_POINTS) pts.splice(0, pts.length - KEEP_POINTS);
        }
        updateValue(ev.acc, d.path);
        if (String(d.path).startsWith("clamp.")) renderVehicle();
      }
    } else if (ev.kind === "vehicle") {
      S.vehicle[d.name] = d.value;
      if (d.name === "speed_kmh") S.vehicle.moving = d.value >= 1;
      renderVehicle();
    } else if (ev.kind === "bus") {
      const b = S.buses[d.bus] || (S.buses[d.bus] = { bus: d.bus });
      Object.assign(b, { frames_per_s: d.frames_per_s, load: d.load, bitrate: d.bitrate });
      S.busHist.push([ev.t, S.buses.map((x) => (x ? x.load || 0 : 0))]);
      if (S.busHist.length > KEEP_POINTS) S.busHist.shift();
      renderBus();
    }
    if (ev.kind !== "value" && ev.kind !== "bus") {
      addLog(ev);
      if (ev.acc) addTileEvent(ev);
    }
    renderClock();
  }

  function logItem(ev, who) {
    return el("li", { dataset: { kind: ev.kind } },
      el("span", { cls: "t", text: fmtT(ev.t) }),
      el("span", { cls: "x", text: who ? `${ev.who}: ${ev.text}` : ev.text }));
  }

  function addLog(ev) {
    const list = $("#events");
    list.prepend(logItem(ev, true));
    while (list.children.length > LOG_MAX) list.lastChild.remove();
  }

  function addTileEvent(ev) {
    if (!["event", "binding", "warning", "request", "online", "offline", "ready", "restarted",
      "moved"].includes(ev.kind)) return;
    const tile = S.tiles.get(ev.acc);
    if (!tile) return;
    const list = $(".acc-events", tile.el);
    list.prepend(logItem(ev, false));
    while (list.children.length > TILE_EVENTS) list.lastChild.remove();
  }

  function renderClock() { $("#clock").textContent = `${fmtT(S.t)} s`; }

  // --- vehicle ---------------------------------------------------------------------------
  function mounts() {
    const out = [];
    for (const a of S.accs.values()) {
      const v = (a.values || []).find((x) => x.path === "clamp.state");
      if (v) out.push([a, v]);
    }
    return out;
  }

  function renderVehicle() {
    const v = S.vehicle;
    $("#v-speed").textContent = Math.round(v.speed_kmh || 0);
    const ign = $("#v-ignition");
    ign.textContent = v.ignition ? "on" : "off";
    ign.className = "v " + (v.ignition ? "on" : "off");
    const open = Object.keys(v).filter((k) => k.startsWith("door.") && v[k]).map((k) => k.slice(5));
    const doors = $("#v-doors");
    doors.textContent = open.length ? `open: ${open.join(", ")}` : "all closed";
    doors.className = "v " + (open.length ? "alert" : "");
    $("#v-media").textContent = `${v["media.playing"] ? "playing" : "paused"}, track ${v["media.track"] ?? "–"}`;
    const vol = v["media.volume"] ?? 0;
    $("#v-volume").textContent = `${vol}`;
    $("#v-volume-bar").style.width = `${Math.max(0, Math.min(100, vol / 40 * 100))}%`;
    const sp = v["climate.setpoint_c"];
    $("#v-setpoint").textContent = typeof sp === "number" ? `${sp.toFixed(1)} °C` : "–";
    const air = $("#v-air");
    air.textContent = v["climate.fresh_air"] ? "fresh air" : "recirculation";
    air.className = "v " + (v["climate.fresh_air"] ? "on" : "");
    const ms = mounts();
    const clamp = $("#v-clamp");
    if (!ms.length) {
      clamp.textContent = "no phone mount";
      clamp.className = "v off";
    } else {
      clamp.textContent = ms.map(([a, st]) => {
        const moving = (a.values || []).find((x) => x.path === "clamp.vehicle_moving");
        const locked = st.text === "clamped" && moving && moving.value === true;
        return `${st.text}${locked ? " · locked while moving" : ""}`;
      }).join("; ");
      clamp.className = "v " + (ms.some(([, st]) => st.text === "clamped") ? "on" : "");
    }
    $("#b-clamp").disabled = !ms.length;
    $("#b-release").disabled = !ms.length;
  }

  function vehicleStatus(text, bad) {
    const s = $("#v-status");
    s.textContent = text;
    s.className = "status" + (bad ? " bad" : "");
  }

  async function setVehicle(name, value) {
    const r = await send("vehicle", { name, value });
    if (!r.ok) vehicleStatus(r.error || "refused", true);
  }

  async function release(confirm) {
    $("#v-confirm").hidden = true;
    const r = await send("release", { confirm });
    if (r.result === "confirm_required") {
      $("#v-confirm").hidden = false;
      vehicleStatus("the mount asks for confirmation while moving", false);
    } else {
      vehicleStatus(`release: ${r.text || r.error}`, !r.ok);
    }
  }

  function wireVehicle() {
    $("#b-play").onclick = () => setVehicle("media.playing", !S.vehicle["media.playing"]);
    $("#b-vol-up").onclick = () => setVehicle("media.volume", Math.min(40, (S.vehicle["media.volume"] ?? 0) + 1));
    $("#b-vol-down").onclick = () => setVehicle("media.volume", Math.max(0, (S.vehicle["media.volume"] ?? 0) - 1));
    $("#b-warmer").onclick = () => setVehicle("climate.setpoint_c", Math.min(28, (S.vehicle["climate.setpoint_c"] ?? 21) + 0.5));
    $("#b-cooler").onclick = () => setVehicle("climate.setpoint_c", Math.max(16, (S.vehicle["climate.setpoint_c"] ?? 21) - 0.5));
    $("#b-air").onclick = () => setVehicle("climate.fresh_air", !S.vehicle["climate.fresh_air"]);
    $("#b-clamp").onclick = async () => {
      const r = await send("clamp");
      vehicleStatus(`clamp: ${r.text || r.error}`, !r.ok);
    };
    $("#b-release").onclick = () => release(false);
    $("#b-confirm").onclick = () => release(true);
    $("#b-cancel").onclick = () => { $("#v-confirm").hidden = true; vehicleStatus("kept clamped", false); };
  }

  // --- bus -------------------------------------------------------------------------------
  function renderBus() {
    const list = $("#bus-list");
    list.replaceChildren(...S.buses.filter(Boolean).map((b) => {
      const bar = el("span");
      bar.style.width = `${Math.min(100, (b.load || 0) * 100)}%`; // CSSOM: allowed by the page's CSP
      return el("div", { cls: "row", dataset: { bus: b.bus } },
        el("span", { cls: "k", text: `CAN ${b.bus}` }),
        el("span", { cls: "meter" }, bar),
        el("span", { cls: "v num bus-load", text: `${((b.load || 0) * 100).toFixed(1)} % · ${Math.round(b.frames_per_s || 0)} fr/s` }));
    }));
    if (!S.buses.length) list.append(el("div", { cls: "row off", text: "no CAN bus" }));
    $("#ble").textContent = S.ble || "off";
    const series = S.buses.map((_, i) => S.busHist.map(([t, loads]) => [t, (loads[i] || 0) * 100]));
    drawChart($("#bus-chart"), series, { unit: "%", floorZero: true, label: "bus load %" });
  }

  // --- accessory tiles -------------------------------------------------------------------
  function stateOf(a) { return a.ready ? "ready" : a.online ? "online" : "offline"; }
  function caps(a) { return (a.description && a.description.capabilities) || []; }

  function upsert(a) {
    S.accs.set(a.uid, a);
    if (!S.hist.has(a.uid)) S.hist.set(a.uid, new Map());
    const sig = JSON.stringify(a.description || null);
    let tile = S.tiles.get(a.uid);
    if (!tile || tile.sig !== sig) {
      const fresh = buildTile(a, sig);
      if (tile) tile.el.replaceWith(fresh.el);
      else $("#tiles").append(fresh.el);
      if (tile) $(".acc-events", fresh.el).replaceWith($(".acc-events", tile.el));
      S.tiles.set(a.uid, fresh);
      tile = fresh;
    }
    $("#empty").hidden = S.accs.size > 0;
    updateTile(a);
    renderVehicle();
  }

  function buildTile(a, sig) {
    const rows = new Map();
    const main = el("table", { cls: "values" });
    const settings = el("table", { cls: "values" });
    const cmds = el("div", { cls: "cmds" });
    const diag = el("div", { cls: "cmds" });
    let chartable = null, rank = 0;
    for (const cap of caps(a)) {
      for (const attr of cap.attributes || []) {
        if (cap.name === "device_info" && IDENTITY.has(attr.name)) continue;
        const path = `${cap.path}.${attr.name}`;
        const tr = attrRow(a, cap, attr, path);
        rows.set(path, tr);
        const showMain = attr.reportable && cap.name !== "device_info";
        (showMain ? main : settings).append(tr);
        // the chart's first series: a "value" of a capability with events (what the
        // accessory alerts on), else the first "value", else the first number
        const r = !showMain || !isNumeric(attr) ? 0
          : 1 + (attr.name === "value" ? 1 : 0) + (attr.name === "value" && (cap.events || []).length ? 1 : 0);
        if (r > rank) { chartable = path; rank = r; }
      }
      for (const c of cap.commands || []) {
        (cap.name === "device_info" ? diag : cmds).append(commandForm(a, cap, c));
      }
    }
    const tileEl = el("article", { cls: "tile", dataset: { uid: a.uid, label: a.label, class: a.class_name || "" } },
      el("header", {},
        el("h3", { cls: "label", text: a.label }),
        el("span", { cls: "cls", text: a.class_name || "?" }),
        el("span", { cls: "link" }),
        el("span", { cls: "state" })),
      el("div", { cls: "product" }),
      chartable ? el("div", { cls: "chartbox" },
        el("canvas", { cls: "chart", width: 300, height: 90 }),
        el("span", { cls: "chartlabel" })) : null,
      main.children.length ? main : null,
      cmds.children.length ? cmds : null,
      settings.children.length || diag.children.length
        ? el("details", {}, el("summary", { text: "settings and diagnostics" }), settings, diag) : null,
      el("p", { cls: "status" }),
      el("ol", { cls: "acc-events" }));
    const tile = { el: tileEl, sig, rows, chartPath: chartable };
    for (const [path, tr] of rows) {
      if (tr.dataset.chartable !== undefined) {
        $("td.name", tr).addEventListener("click", () => { tile.chartPath = path; markChart(a.uid); });
      }
    }
    return tile;
  }

  function attrRow(a, cap, attr, path) {
    const chartable = attr.reportable && isNumeric(attr) && cap.name !== "device_info";
    const tr = el("tr", { dataset: { path } },
      el("td", { cls: "name", text: path, title: `${attr.type}${attr.unit ? ", " + attr.unit : ""}, ${attr.access}` }),
      el("td", { cls: "val", text: "–" }),
      el("td", { cls: "spark" }, chartable ? el("canvas", { cls: "spark", width: 64, height: 16 }) : null),
      el("td", { cls: "ctl" }));
    if (chartable) tr.dataset.chartable = "";
    const ctl = $("td.ctl", tr);
    const writable = String(attr.access || "").includes("write");
    if (writable) ctl.append(...writeControl(a, attr, path, tr));
    if (!attr.reportable) {
      ctl.append(el("button", { type: "button", cls: "read", title: "read now", text: "↻",
        onclick: async () => tileStatus(a.uid, await send("read", { acc: a.uid, path })) }));
    }
    return tr;
  }

  function writeControl(a, attr, path, tr) {
    const write = async (value) => tileStatus(a.uid, await send("write", { acc: a.uid, path, value }));
    if (attr.type === "bool") {
      return [el("button", { type: "button", cls: "toggle", text: "toggle",
        onclick: () => { const cur = currentValue(a.uid, path); write(!(cur === true)); } })];
    }
    if (attr.values) {
      const sel = el("select", { cls: "in" }, ...Object.entries(attr.values).map(([v, n]) => el("option", { value: v, text: n })));
      return [sel, el("button", { type: "button", cls: "set", text: "set", onclick: () => write(Number(sel.value)) })];
    }
    if (isNumeric(attr)) {
      const u = unitOf(attr.unit);
      const scale = u ? u.scale : 1;
      const range = attr.range || [];
      const inp = el("input", { type: "number", cls: "in", step: 1 / scale,
        min: range.length ? range[0] / scale : null, max: range.length ? range[1] / scale : null,
        title: u ? u.suffix.trim() : (attr.unit || "") });
      tr.dataset.scale = scale;
      return [inp, el("button", { type: "button", cls: "set", text: "set", onclick: () => {
        if (inp.value === "") return;
        write(Math.round(Number(inp.value) * scale));
      } })];
    }
    if (attr.type === "str") {
      const inp = el("input", { type: "text", cls: "in" });
      return [inp, el("button", { type: "button", cls: "set", text: "set", onclick: () => write(inp.value) })];
    }
    return [];
  }

  function argInput(f) {
    const name = f.name;
    if (f.type === "bool") return el("input", { type: "checkbox", cls: "arg", dataset: { arg: name, type: "bool" } });
    if (f.values) {
      return el("select", { cls: "arg", dataset: { arg: name, type: "enum" } },
        ...Object.entries(f.values).map(([v, n]) => el("option", { value: v, text: n })));
    }
    if (f.unit === "rgb888") {
      const d = ARG_DEFAULTS[name] ?? 0xff8c00;
      return el("input", { type: "color", cls: "arg", value: "#" + d.toString(16).padStart(6, "0"),
        dataset: { arg: name, type: "rgb" } });
    }
    if (f.type === "int" || f.type === "uint") {
      let d = ARG_DEFAULTS[name];
      if (d === undefined) d = f.min !== undefined ? Math.max(f.min, 0) : 0;
      if (f.min !== undefined) d = Math.max(f.min, d);
      if (f.max !== undefined) d = Math.min(f.max, d);
      return el("input", { type: "number", cls: "arg", value: d, min: f.min, max: f.max, step: 1,
        dataset: { arg: name, type: "int" } });
    }
    if (f.type === "str") return el("input", { type: "text", cls: "arg", dataset: { arg: name, type: "str" } });
    return null; // a type a form cannot build (lists, maps)
  }

  function commandForm(a, cap, c) {
    const path = `${cap.path}.${c.name}`;
    const inputs = [];
    let buildable = true;
    const form = el("div", { cls: "cmd", dataset: { cmd: path } });
    const btn = el("button", { type: "button", text: c.name, title: `invoke ${path}` });
    form.append(btn);
    for (const f of c.args || []) {
      const inp = argInput(f);
      if (!inp) { if (!f.optional) buildable = false; continue; }
      inputs.push([f, inp]);
      form.append(el("label", { text: f.name + (f.unit && f.unit !== "rgb888" ? ` (${f.unit})` : "") }), inp);
    }
    btn.disabled = !buildable;
    btn.addEventListener("click", async () => {
      let args = null;
      if ((c.args || []).length) {
        args = [];
        for (const [f, inp] of inputs) {
          const t = inp.dataset.type;
          if (t === "bool") args.push(inp.checked);
          else if (t === "enum" || t === "int") args.push(Number(inp.value));
          else if (t === "rgb") args.push(parseInt(inp.value.slice(1), 16));
          else args.push(inp.value);
        }
        // trailing optional booleans left unticked are left out
        while (inputs.length && args.length && inputs[args.length - 1][0].optional &&
               inputs[args.length - 1][1].dataset.type === "bool" && args[args.length - 1] === false) args.pop();
      }
      btn.disabled = true;
      const r = await send("invoke", { acc: a.uid, path, args });
      btn.disabled = false;
      tileStatus(a.uid, r);
    });
    return form;
  }

  function tileStatus(uid, r) {
    const tile = S.tiles.get(uid);
    if (!tile) return;
    const s = $(".status", tile.el);
    s.textContent = r.ok ? (r.text || "OK") : `${r.status || "failed"}: ${r.error || ""}`;
    s.className = "status" + (r.ok ? "" : " bad");
  }

  function currentValue(uid, path) {
    const a = S.accs.get(uid);
    const v = a && (a.values || []).find((x) => x.path === path);
    return v ? v.value : undefined;
  }

  function updateTile(a) {
    const tile = S.tiles.get(a.uid);
    if (!tile) return;
    const st = stateOf(a);
    tile.el.dataset.state = st;
    tile.el.dataset.label = a.label;
    $("h3.label", tile.el).textContent = a.label;
    $(".state", tile.el).textContent = st;
    $(".link", tile.el).textContent = `${String(a.transport || "").toUpperCase()} ${a.address ?? ""}`;
    const id = a.description && a.description.identity;
    const hv = a.health ?? currentValue(a.uid, "device_info.health");
    const health = ["nominal", "advisory", "caution", "warning"][hv] ?? (hv ?? "–");
    $(".product", tile.el).textContent = id
      ? `${id.vendor} ${id.product} · fw ${id.firmware || "?"} · health ${health} · restarts ${a.restarts}`
      : `${a.uid} · not described yet`;
    for (const path of tile.rows.keys()) updateValue(a.uid, path, true);
    markChart(a.uid);
  }

  function updateValue(uid, path, quiet) {
    const tile = S.tiles.get(uid);
    if (!tile) return;
    const tr = tile.rows.get(path);
    if (tr) {
      const a = S.accs.get(uid);
      const v = (a.values || []).find((x) => x.path === path);
      const td = $("td.val", tr);
      const text = v ? v.text : "–";
      if (td.textContent !== text) td.textContent = text;
      if (v && typeof v.value === "number") {
        const inp = $("input.in", tr);
        if (inp && document.activeElement !== inp && inp.value === "") {
          inp.value = v.value / Number(tr.dataset.scale || 1);
        }
      }
    }
    if (!quiet && tr && tr.dataset.chartable !== undefined) markChart(uid);
  }

  function markChart(uid) {
    dirty.add(uid);
    if (redrawTimer === null) redrawTimer = setTimeout(redraw, 60);
  }

  function redraw() {
    redrawTimer = null;
    for (const uid of dirty) {
      const tile = S.tiles.get(uid);
      if (!tile) continue;
      const hist = S.hist.get(uid) || new Map();
      for (const [p, tr] of tile.rows) {
        const c = $("canvas.spark", tr);
        if (c) drawSpark(c, hist.get(p) || []);
      }
      if (!tile.chartPath) continue;
      for (const [p, tr] of tile.rows) tr.classList.toggle("charted", p === tile.chartPath);
      const a = S.accs.get(uid);
      let unit = null;
      for (const cap of caps(a)) for (const at of cap.attributes || []) {
        if (`${cap.path}.${at.name}` === tile.chartPath) unit = at.unit;
      }
      const pts = (S.hist.get(uid) || new Map()).get(tile.chartPath) || [];
      const cur = currentValue(uid, tile.chartPath);
      $(".chartlabel", tile.el).textContent = `${tile.chartPath} · last ${WINDOW_S} s`;
      drawChart($("canvas.chart", tile.el), [pts], { unit, label: tile.chartPath, current: cur });
    }
    dirty.clear();
  }

  // --- charts: one canvas, a line per series, own scale --------------------------------
  const COLORS = ["#4fb3ff", "#4cd68a", "#ffb547", "#ff6170"];
  function drawChart(canvas, series, opts) {
    if (!canvas) return;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const t1 = Math.max(S.t, ...series.map((s) => (s.length ? s[s.length - 1][0] : 0)));
    const t0 = t1 - WINDOW_S;
    const shown = series.map((s) => {
      let i = s.findIndex((p) => p[0] >= t0);
      if (i < 0) i = s.length;
      return s.slice(Math.max(0, i - 1));
    });
    const all = shown.flat().map((p) => p[1]);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#8b97a6";
    if (!all.length) {
      g.fillText("no data yet", 8, h / 2 + 4);
      return;
    }
    let lo = Math.min(...all), hi = Math.max(...all);
    if (opts.floorZero) lo = Math.min(0, lo);
    if (hi - lo < 1e-9) { const pad = Math.max(1, Math.abs(hi) * 0.05); lo -= pad; hi += pad; }
    const label = (v) => (opts.unit === "%" ? `${v.toFixed(1)} %` : fmt(Math.round(v), opts.unit));
    const padTop = 16, padBottom = 14, padLeft = 6;
    const padRight = 10 + Math.max(g.measureText(label(hi)).width, g.measureText(label(lo)).width);
    const x = (t) => padLeft + (w - padLeft - padRight) * (t - t0) / WINDOW_S;
    const y = (v) => padTop + (h - padTop - padBottom) * (1 - (v - lo) / (hi - lo));
    g.strokeStyle = "#2a333f";
    g.lineWidth = 1;
    for (const v of [lo, hi]) { g.beginPath(); g.moveTo(padLeft, y(v)); g.lineTo(w - padRight, y(v)); g.stroke(); }
    shown.forEach((pts, i) => {
      if (!pts.length) return;
      g.strokeStyle = COLORS[i % COLORS.length];
      g.lineWidth = 1.6;
      g.beginPath();
      pts.forEach(([t, v], j) => {
        const px = Math.max(padLeft, x(t)), py = y(v);
        if (j === 0) g.moveTo(px, py);
        else g.lineTo(px, py);
      });
      const [tl, vl] = pts[pts.length - 1];
      g.lineTo(x(t1), y(vl));
      g.stroke();
      g.fillStyle = COLORS[i % COLORS.length];
      g.beginPath();
      g.arc(x(Math.max(tl, t0)), y(vl), 2.5, 0, Math.PI * 2);
      g.fill();
    });
    g.fillStyle = "#8b97a6";
    g.fillText(label(hi), w - padRight + 4, y(hi) + 4);
    g.fillText(label(lo), w - padRight + 4, y(lo) + 4);
  }

  function drawSpark(canvas, pts) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 64, h = canvas.clientHeight || 16;
    if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const t1 = Math.max(S.t, pts.length ? pts[pts.length - 1][0] : 0), t0 = t1 - WINDOW_S;
    const shown = pts.filter((p) => p[0] >= t0);
    if (shown.length < 2) return;
    const vs = shown.map((p) => p[1]);
    let lo = Math.min(...vs), hi = Math.max(...vs);
    if (hi === lo) { lo -= 1; hi += 1; }
    g.strokeStyle = "#4fb3ff";
    g.lineWidth = 1.2;
    g.beginPath();
    shown.forEach(([t, v], j) => {
      const px = w * (t - t0) / WINDOW_S, py = 2 + (h - 4) * (1 - (v - lo) / (hi - lo));
      if (j === 0) g.moveTo(px, py); else g.lineTo(px, py);
    });
    g.stroke();
  }

  // --- start -----------------------------------------------------------------------------
  wireVehicle();
  renderVehicle();
  window.addEventListener("resize", () => { for (const uid of S.tiles.keys()) markChart(uid); renderBus(); });
  window.cabinlinkScreen = S; // for debugging from the browser console
  connect();
})();
