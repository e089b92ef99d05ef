/*
 * rill's status page: fetches api/status once a second and draws it.
 * Every field may be missing (an older or newer library, a service that
 * watches no pipeline): each is read through num/str/arr/obj, which turn
 * anything unexpected into "nothing to show". Text from the service
 * (names, reasons) only ever goes into textContent, never into HTML.
 */
"use strict";

(function () {
  var PERIOD_MS = 1000;
  var token = new URLSearchParams(window.location.search).get("token");
  var previous = null; /* {t, in, out}: the totals of the last answer, for rates */
  var answers = 0;

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }
  function str(v) { return typeof v === "string" ? v : (typeof v === "number" ? String(v) : ""); }
  function arr(v) { return Array.isArray(v) ? v : []; }
  function obj(v) { return v && typeof v === "object" && !Array.isArray(v) ? v : {}; }
  function bool(v) { return v === true; }
  /* Lags and offsets: -1 means not known yet. */
  function known(v) { v = num(v); return v !== null && v >= 0 ? v : null; }

  /* el("div", {class: "x", style: {width: "5%"}}, child, "text", ...):
   * children may be nodes, strings (as text) or null (skipped). Styles are
   * set through the CSSOM: the page's policy refuses style attributes. */
  function el(tag, attrs) {
    var e = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      if (a[k] === null || a[k] === undefined || a[k] === false) return;
      if (k === "class") e.className = a[k];
      else if (k === "style") Object.keys(a[k]).forEach(function (p) { e.style[p] = a[k][p]; });
      else e.setAttribute(k, a[k] === true ? "" : a[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function byId(id) { return document.getElementById(id); }
  function setText(id, text) { var e = byId(id); if (e) e.textContent = text; }
  function replace(id, children) {
    var e = byId(id);
    if (!e) return;
    while (e.firstChild) e.removeChild(e.firstChild);
    children.forEach(function (c) { if (c) e.appendChild(c); });
  }

  function fmtInt(v) {
    v = num(v);
    if (v === null) return "–";
    return Math.round(v).toLocaleString("en-US");
  }
  function fmtRate(v) {
    v = num(v);
    if (v === null) return "–";
    if (v >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (v >= 1e4) return (v / 1e3).toFixed(1) + " k";
    return v >= 100 ? Math.round(v).toString() : v.toFixed(1);
  }
  /* Latencies come in seconds. */
  function fmtSeconds(v) {
    v = num(v);
    if (v === null) return "–";
    if (v < 1e-3) return (v * 1e6).toFixed(0) + " µs";
    if (v < 1) return (v * 1e3).toFixed(v < 0.01 ? 2 : 1) + " ms";
    return v.toFixed(2) + " s";
  }
  function pct(part, whole) {
    part = num(part); whole = num(whole);
    if (part === null || !whole || whole <= 0) return 0;
    return Math.max(0, Math.min(100, part / whole * 100));
  }
  function level(p) { return p >= 90 ? "full" : (p >= 60 ? "high" : ""); }

  function bar(fillPct, cls, hwmPct) {
    return el("div", {class: "bar" + (cls ? " " + cls : "")},
      el("div", {class: "fill " + level(fillPct), style: {width: fillPct.toFixed(1) + "%"}}),
      hwmPct === null || hwmPct === undefined ? null
        : el("div", {class: "hwm", style: {left: "calc(" + hwmPct.toFixed(1) + "% - 1px)"},
                     title: "high-water mark"}));
  }

  /* ---- health and totals ---- */

  function drawHealth(doc) {
    var live = obj(doc.live), ready = obj(doc.ready);
    function badge(id, name, part) {
      var e = byId(id);
      if (!e) return;
      var known = typeof part.ok === "boolean";
      e.className = "badge " + (!known ? "unknown" : (part.ok ? "ok" : (id === "live" ? "bad" : "warn")));
      e.textContent = known ? (part.ok ? name : "not " + name) : name + " ?";
      e.title = str(part.reason);
    }
    badge("live", "live", live);
    badge("ready", "ready", ready);
    var reason = live.ok === false ? str(live.reason) : (ready.ok === false ? str(ready.reason) : "");
    setText("health-reason", reason);
    setText("service", str(doc.service) || "rill");
    document.title = (str(doc.service) || "rill") + " — rill status";
  }

  function totals(doc) {
    var t = { in: 0, out: 0, lag: 0, seenIn: false, seenOut: false, seenLag: false };
    arr(doc.pipelines).forEach(function (p) {
      p = obj(p);
      arr(p.consumers).forEach(function (c) {
        c = obj(c);
        var n = num(c.emitted) !== null ? num(c.emitted) : num(c.polled);
        if (n !== null) { t.in += n; t.seenIn = true; }
        if (known(c.lag) !== null) { t.lag += known(c.lag); t.seenLag = true; }
      });
      arr(p.producers).forEach(function (s) {
        s = obj(s);
        if (num(s.delivered) !== null) { t.out += num(s.delivered); t.seenOut = true; }
      });
    });
    return t;
  }

  function drawTotals(doc) {
    var t = totals(doc);
    var now = num(doc.time_ms) !== null ? num(doc.time_ms) : Date.now();
    if (previous && now > previous.t) {
      var dt = (now - previous.t) / 1000;
      /* A restart resets a counter: show 0 rather than a negative rate. */
      setText("rate-in", t.seenIn ? fmtRate(Math.max(0, t.in - previous.in) / dt) : "–");
      setText("rate-out", t.seenOut ? fmtRate(Math.max(0, t.out - previous.out) / dt) : "–");
    }
    previous = { t: now, in: t.in, out: t.out };
    setText("lag-total", t.seenLag ? fmtInt(t.lag) : "–");

    var execs = arr(doc.executors).map(function (x, i) {
      x = obj(x);
      var p = pct(num(x.busy_ratio), 1);
      return el("div", {class: "executor", title: "executor " + (num(x.index) !== null ? x.index : i)},
        "#" + (num(x.index) !== null ? x.index : i) + " " + (num(x.busy_ratio) === null ? "–" : p.toFixed(0) + " %"),
        bar(p, "", null));
    });
    replace("executors", execs.length ? execs : [el("span", {class: "empty"}, "–")]);
  }

  /* ---- pipelines ---- */

  function stageBox(s, consumer, producer) {
    var depth = num(s.mailbox_depth), cap = num(s.mailbox_capacity), hwm = num(s.mailbox_hwm);
    var fill = pct(depth, cap);
    var paused = consumer && (bool(consumer.paused) ||
      arr(consumer.partitions).some(function (x) { return bool(obj(x).paused); }));
    var stopped = s.running === false;
    var disconnected = (consumer && consumer.connected === false) || (producer && producer.connected === false);
    var lastError = str((consumer || {}).last_error) || str((producer || {}).last_error);
    var cls = "stage " + level(fill) + (paused ? " paused" : "") + (stopped ? " stopped" : "");
    return el("div", {class: cls, "data-stage": str(s.name)},
      el("div", {class: "name"}, str(s.name) || ("stage " + str(s.index))),
      el("div", {class: "kind"}, str(s.kind)),
      stopped ? el("div", {class: "numbers"}, "not running") : bar(fill, "", cap ? pct(hwm, cap) : null),
      stopped ? null : el("div", {class: "numbers"},
        "mailbox " + fmtInt(depth) + " / " + fmtInt(cap) + (hwm !== null ? " · peak " + fmtInt(hwm) : "")),
      num(s.processed) !== null ? el("div", {class: "numbers"}, fmtInt(s.processed) + " processed") : null,
      producer && num(producer.inflight) !== null
        ? el("div", {class: "numbers"}, fmtInt(producer.inflight) + " in flight") : null,
      consumer && known(consumer.lag) !== null
        ? el("div", {class: "numbers"}, "lag " + fmtInt(consumer.lag)) : null,
      paused ? el("span", {class: "flag"}, "PAUSED") : null,
      disconnected ? el("span", {class: "flag bad"}, "NO BROKER") : null,
      lastError ? el("div", {class: "numbers error-text", title: lastError}, lastError) : null);
  }

  function partitionTable(consumers) {
    var rows = [];
    var maxLag = 0;
    consumers.forEach(function (c) {
      arr(c.partitions).forEach(function (x) {
        x = obj(x);
        if (known(x.lag) !== null) maxLag = Math.max(maxLag, known(x.lag));
        rows.push({c: c, x: x});
      });
    });
    if (!rows.length) return null;
    var head = el("tr", null, el("th", null, "consumer"), el("th", null, "topic"), el("th", null, "partition"),
      el("th", null, "lag"), el("th", null, ""), el("th", null, "committed"), el("th", null, "end"),
      el("th", null, "state"));
    var body = rows.map(function (r) {
      var paused = bool(r.x.paused);
      return el("tr", {class: paused ? "paused" : ""},
        el("td", null, str(r.c.stage) + (str(r.c.group) ? " (" + str(r.c.group) + ")" : "")),
        el("td", null, str(r.x.topic)), el("td", {class: "num"}, str(r.x.partition)),
        el("td", {class: "num"}, fmtInt(known(r.x.lag))),
        el("td", null, bar(pct(known(r.x.lag), maxLag), "lag", null)),
        el("td", {class: "num"}, fmtInt(known(r.x.committed_offset))),
        el("td", {class: "num"}, fmtInt(known(r.x.end_offset))),
        el("td", null, paused ? "paused" : "fetching"));
    });
    return el("table", {class: "partitions"}, el("thead", null, head), el.apply(null, ["tbody", null].concat(body)));
  }

  function latencyTable(consumers, producers) {
    var rows = [];
    function add(what, who, l) {
      l = obj(l);
      if (num(l.count) === null && num(l.p50) === null) return;
      rows.push(el("tr", null, el("td", null, what), el("td", null, who), el("td", {class: "num"}, fmtInt(l.count)),
        el("td", {class: "num"}, fmtSeconds(l.p50)), el("td", {class: "num"}, fmtSeconds(l.p90)),
        el("td", {class: "num"}, fmtSeconds(l.p99))));
    }
    consumers.forEach(function (c) {
      add("commit", str(c.stage), c.commit_latency);
      add("end to end", str(c.stage), c.e2e_latency);
    });
    producers.forEach(function (s) { add("delivery", str(s.stage), s.delivery_latency); });
    if (!rows.length) return null;
    var head = el("tr", null, el("th", null, "latency"), el("th", null, "stage"), el("th", null, "count"),
      el("th", null, "p50"), el("th", null, "p90"), el("th", null, "p99"));
    return el("table", {class: "latency"}, el("thead", null, head), el.apply(null, ["tbody", null].concat(rows)));
  }

  function drawPipeline(p) {
    var consumers = arr(p.consumers).map(obj), producers = arr(p.producers).map(obj);
    function find(list, name) {
      for (var i = 0; i < list.length; i++) if (str(list[i].stage) === name && name !== "") return list[i];
      return null;
    }
    var flow = el("div", {class: "flow"});
    arr(p.stages).map(obj).forEach(function (s, i) {
      if (i > 0) flow.appendChild(el("div", {class: "arrow"}, "→"));
      flow.appendChild(stageBox(s, find(consumers, str(s.name)), find(producers, str(s.name))));
    });
    var restarts = num(p.restarts);
    return el("div", {class: "pipeline", "data-pipeline": str(p.name)},
      el("div", {class: "pipeline-head"},
        el("span", {class: "name"}, str(p.name) || "pipeline"),
        str(p.end) ? el("span", {class: "end " + str(p.end)}, str(p.end)) : null,
        str(p.end_text) && str(p.end_text) !== str(p.end) ? el("span", {class: "meta"}, str(p.end_text)) : null,
        num(p.runs) !== null ? el("span", {class: "meta"}, "run " + fmtInt(p.runs)) : null,
        restarts !== null ? el("span", {class: "meta"}, fmtInt(restarts) + " restart" + (restarts === 1 ? "" : "s")) : null),
      flow.childNodes.length ? flow : el("p", {class: "empty"}, "no stages reported"),
      partitionTable(consumers),
      latencyTable(consumers, producers));
  }

  /* ---- the tree ---- */

  function countRestarts(nodes) {
    var n = 0;
    arr(nodes).forEach(function (x) {
      x = obj(x);
      n += num(x.restarts) || 0;
      n += countRestarts(x.children);
    });
    return n;
  }

  /* An exit: {kind, text} (or, from older documents, a string); nothing
   * for a normal one without text. */
  function exitText(e, prefix) {
    if (typeof e === "string") return e ? el("span", {class: "exit"}, prefix + e) : null;
    e = obj(e);
    var kind = str(e.kind), text = str(e.text);
    if (!text && (kind === "" || kind === "normal")) return null;
    return el("span", {class: "exit"}, prefix + kind + (text ? ": " + text : ""));
  }

  function treeList(nodes, depth) {
    if (depth > 32 || !arr(nodes).length) return null;
    var ul = el("ul", {class: depth ? "" : "tree"});
    arr(nodes).forEach(function (x) {
      x = obj(x);
      var restarting = bool(x.restarting);
      var stopped = x.running === false && !restarting;
      var r = num(x.restarts);
      ul.appendChild(el("li", null,
        el("span", {class: "node" + (restarting ? " restarting" : "") + (stopped ? " stopped" : "")},
          el("span", {class: "name"}, str(x.name) || str(x.id) || "?"),
          str(x.kind) ? el("span", {class: "kind"}, str(x.kind)) : null,
          restarting ? el("span", {class: "badge bad"}, "restarting")
            : (x.running === true ? el("span", {class: "badge ok"}, "running")
              : (x.running === false ? el("span", {class: "badge"}, "stopped") : null)),
          r !== null ? el("span", {class: "restarts" + (r > 0 ? " some" : "")}, fmtInt(r) + " restart" + (r === 1 ? "" : "s")) : null,
          restarting && num(x.next_delay_ms) !== null
            ? el("span", {class: "exit"}, "next try in " + fmtInt(x.next_delay_ms) + " ms") : null,
          exitText(x.exit, "gave up: ") || exitText(x.last_exit, "last exit: ")),
        treeList(x.children, depth + 1)));
    });
    return ul;
  }

  /* ---- stores ---- */

  function storeTable(stores) {
    if (!stores.length) return null;
    var head = el("tr", null, el("th", null, "store"), el("th", null, "bytes"), el("th", null, "restoring"),
      el("th", null, "restored"), el("th", null, "late records"));
    var rows = stores.map(function (s) {
      return el("tr", {class: num(s.restoring) ? "paused" : ""}, el("td", null, str(s.name)),
        el("td", {class: "num"}, fmtInt(s.bytes)), el("td", {class: "num"}, fmtInt(s.restoring)),
        el("td", {class: "num"}, fmtInt(s.restored)), el("td", {class: "num"}, fmtInt(s.late)));
    });
    return el("table", null, el("thead", null, head), el.apply(null, ["tbody", null].concat(rows)));
  }

  function tableTable(tables) {
    if (!tables.length) return null;
    var head = el("tr", null, el("th", null, "table"), el("th", null, "keys"), el("th", null, "records"),
      el("th", null, "state"));
    var rows = tables.map(function (t) {
      var behind = t.caught_up === false;
      return el("tr", {class: behind ? "paused" : ""}, el("td", null, str(t.name)),
        el("td", {class: "num"}, fmtInt(t.keys)), el("td", {class: "num"}, fmtInt(t.records)),
        el("td", null, behind ? "catching up" : (t.caught_up === true ? "caught up" : "–")));
    });
    return el("table", null, el("thead", null, head), el.apply(null, ["tbody", null].concat(rows)));
  }

  function draw(doc) {
    doc = obj(doc);
    drawHealth(doc);
    drawTotals(doc);
    var pipelines = arr(doc.pipelines).map(obj);
    replace("pipelines", pipelines.length ? pipelines.map(drawPipeline) : [el("p", {class: "empty"}, "no pipeline watched")]);
    var tree = treeList(doc.tree, 0);
    replace("tree", [tree || el("p", {class: "empty"}, "no supervisor watched")]);
    setText("restarts-total", arr(doc.tree).length ? fmtInt(countRestarts(doc.tree)) : "–");
    var stores = storeTable(arr(doc.stores).map(obj)), tables = tableTable(arr(doc.tables).map(obj));
    replace("stores", stores || tables ? [stores, tables] : [el("p", {class: "empty"}, "no store or table watched")]);
    var actors = obj(doc.actors);
    setText("actors", num(actors.alive) === null ? "" : fmtInt(actors.alive) + " actors" +
      (num(actors.dead_letters) ? " · " + fmtInt(actors.dead_letters) + " dead letters" : ""));
    answers++;
    document.body.setAttribute("data-answers", String(answers));
    setText("updated", "updated " + new Date().toLocaleTimeString());
  }

  function showError(text) {
    var e = byId("error");
    if (!e) return;
    e.hidden = !text;
    e.textContent = text || "";
  }

  function poll() {
    var headers = { "Accept": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    fetch("api/status", { headers: headers, cache: "no-store", credentials: "omit" })
      .then(function (r) {
        if (r.status === 401) throw new Error("the service wants a token: open this page with ?token=…");
        if (!r.ok) throw new Error("api/status answered " + r.status);
        return r.json();
      })
      .then(function (doc) {
        showError("");
        try {
          draw(doc);
        } catch (e) {
          showError("could not draw the status: " + (e && e.message ? e.message : String(e)));
        }
      })
      .catch(function (e) {
        showError("no status from the service: " + (e && e.message ? e.message : String(e)));
      })
      .then(function () { window.setTimeout(poll, PERIOD_MS); });
  }

  function start() {
    var link = byId("status-link");
    if (link && token) link.setAttribute("href", "api/status?token=" + encodeURIComponent(token));
    poll();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
