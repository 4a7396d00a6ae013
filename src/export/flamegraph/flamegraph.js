// The krait flame graph page: reads the JSON in #krait-data (its format is
// described in src/export/flamegraph_html.h) and draws the merged call tree
// as rows of absolutely placed div cells, the root on top. Names from the
// profile reach the DOM only as text and attribute values, never as markup.
(function () {
  "use strict";

  var ROW_PX = 18;
  var MIN_CELL_PX = 0.5;  // narrower cells are not drawn
  var MAX_CELLS = 20000;  // bounds the DOM whatever the profile
  var KIND_LABELS = {
    python: "Python", native: "native", kernel: "kernel", synthetic: "synthetic",
    process: "process", thread: "thread"
  };

  var data = JSON.parse(document.getElementById("krait-data").textContent);
  var frames = data.frames;
  var kinds = data.kinds;
  var count = data.nodes.length / 3;
  var nodeFrame = new Int32Array(count);
  var nodeParent = new Int32Array(count);
  var nodeValue = new Float64Array(count);
  var children = new Array(count);
  var i;
  for (i = 0; i < count; i++) {
    nodeFrame[i] = data.nodes[3 * i];
    nodeParent[i] = data.nodes[3 * i + 1];
    nodeValue[i] = data.nodes[3 * i + 2];
    children[i] = [];
    if (i > 0 && nodeParent[i] >= 0 && nodeParent[i] < i) children[nodeParent[i]].push(i);
  }
  // Widest first: the heaviest callees line up on the left.
  for (i = 0; i < count; i++) {
    children[i].sort(function (a, b) { return nodeValue[b] - nodeValue[a]; });
  }

  var el = function (id) { return document.getElementById(id); };
  var graph = el("graph");
  var tooltip = el("tooltip");
  var state = { base: 0, zoom: 0, query: "" };

  function nameOf(node) { return node === 0 ? "all" : frames[nodeFrame[node]][0]; }
  function fileOf(node) { return node === 0 ? "" : frames[nodeFrame[node]][1]; }
  function lineOf(node) { return node === 0 ? 0 : frames[nodeFrame[node]][2]; }
  function kindOf(node) { return node === 0 ? "root" : kinds[frames[nodeFrame[node]][3]]; }
  function selfOf(node) {
    var rest = nodeValue[node];
    children[node].forEach(function (c) { rest -= nodeValue[c]; });
    return rest;
  }
  function percent(part, whole) {
    return whole > 0 ? (100 * part / whole).toFixed(2) + "%" : "0%";
  }
  function timeText(ns) {
    return ns >= 1e9 ? (ns / 1e9).toFixed(2) + " s" : (ns / 1e6).toFixed(1) + " ms";
  }
  function cpuTime(samples) {
    if (data.weighted_by_time || !(data.period_ns > 0)) return "";
    return timeText(samples * data.period_ns);
  }
  // Off-CPU and wall profiles weigh each stack by its time in nanoseconds.
  function amount(v) {
    if (data.weighted_by_time) return timeText(v);
    var time = cpuTime(v);
    return v + " samples" + (time ? " (" + time + ")" : "");
  }
  function where(node) {
    var file = fileOf(node), line = lineOf(node);
    if (!file) return line > 0 ? "line " + line : "";
    return line > 0 ? file + ":" + line : file;
  }
  function matches(node) {
    if (!state.query || node === 0) return false;
    return nameOf(node).toLowerCase().indexOf(state.query) >= 0 ||
           fileOf(node).toLowerCase().indexOf(state.query) >= 0;
  }

  function makeCell(node, left, width, row, extraClass) {
    var cell = document.createElement("div");
    cell.className = "cell kind-" + kindOf(node) + (extraClass ? " " + extraClass : "");
    cell.style.left = (left * 100) + "%";
    cell.style.width = (width * 100) + "%";
    cell.style.top = (row * ROW_PX) + "px";
    cell.setAttribute("data-node", String(node));
    cell.setAttribute("data-name", nameOf(node));
    cell.setAttribute("data-kind", kindOf(node));
    cell.textContent = nameOf(node);
    return cell;
  }

  function render() {
    var width = graph.clientWidth || 1000;
    var fragment = document.createDocumentFragment();
    var row = 0;
    // The path from the selected process/thread down to the zoomed node,
    // full width and faded: clicking one zooms out to it.
    var path = [];
    for (var a = state.zoom; a !== state.base && a > 0; a = nodeParent[a]) path.push(a);
    path.push(state.base);
    path.reverse();
    for (var p = 0; p < path.length - 1; p++) {
      fragment.appendChild(makeCell(path[p], 0, 1, row++, "ancestor"));
    }
    var total = nodeValue[state.zoom];
    var drawn = 0, skipped = 0, maxRow = row;
    var todo = [[state.zoom, 0, 1, row]];
    while (todo.length > 0) {
      var item = todo.pop();
      var node = item[0], left = item[1], w = item[2], r = item[3];
      if (w * width < MIN_CELL_PX || drawn >= MAX_CELLS) {
        skipped++;
        continue;
      }
      fragment.appendChild(makeCell(node, left, w, r, ""));
      drawn++;
      if (r > maxRow) maxRow = r;
      var x = left;
      var kids = children[node];
      for (var k = 0; k < kids.length; k++) {
        var cw = total > 0 ? nodeValue[kids[k]] / total : 0;
        todo.push([kids[k], x, cw, r + 1]);
        x += cw;
      }
    }
    graph.textContent = "";
    graph.appendChild(fragment);
    graph.style.height = ((maxRow + 1) * ROW_PX) + "px";
    graph.setAttribute("data-rendered-cells", String(drawn));
    el("path").textContent = state.zoom !== state.base
        ? "Zoomed to " + nameOf(state.zoom) + " (" + percent(nodeValue[state.zoom], nodeValue[state.base]) +
          "); click a faded bar or Reset zoom to go back"
        : "";
    var notes = [];
    if (data.trimmed) {
      notes.push("Large profile: only the " + count + " largest of " + data.total_nodes +
                 " call-tree nodes are included; the samples of the rest count as self time of their callers.");
    }
    if (drawn >= MAX_CELLS) notes.push("Only the " + MAX_CELLS + " widest cells are drawn; zoom in to see the rest.");
    el("notice").textContent = notes.join(" ");
    highlight();
  }

  function highlight() {
    var cells = graph.querySelectorAll(".cell");
    for (var c = 0; c < cells.length; c++) {
      var node = Number(cells[c].getAttribute("data-node"));
      cells[c].classList.toggle("match", matches(node));
    }
    var out = el("matched");
    if (!state.query) {
      out.textContent = "";
      return;
    }
    // Matched share of the selected process/thread: a match's subtree is
    // counted once, however many matches it holds.
    var hit = 0;
    var todo = [state.base];
    while (todo.length > 0) {
      var node2 = todo.pop();
      if (matches(node2)) {
        hit += nodeValue[node2];
        continue;
      }
      Array.prototype.push.apply(todo, children[node2]);
    }
    out.textContent = "Matched: " + percent(hit, nodeValue[state.base]) + " (" + amount(hit) + ")";
    out.setAttribute("data-matched-samples", String(hit));
  }

  function showTooltip(node, event) {
    tooltip.textContent = "";
    var add = function (text, cls) {
      var div = document.createElement("div");
      if (cls) div.className = cls;
      div.textContent = text;
      tooltip.appendChild(div);
    };
    add(nameOf(node), "name");
    add(KIND_LABELS[kindOf(node)] || kindOf(node));
    if (where(node)) add(where(node));
    var v = nodeValue[node];
    add(amount(v) + ", " + percent(v, nodeValue[state.base]) +
        (state.base !== 0 ? " of selection, " + percent(v, nodeValue[0]) + " of all" : ""));
    var self = selfOf(node);
    if (self > 0) add("self: " + amount(self) + ", " + percent(self, nodeValue[state.base]));
    tooltip.hidden = false;
    var x = Math.min(event.clientX + 12, window.innerWidth - tooltip.offsetWidth - 4);
    var y = event.clientY + 16;
    if (y + tooltip.offsetHeight > window.innerHeight) y = event.clientY - tooltip.offsetHeight - 8;
    tooltip.style.left = Math.max(0, x) + "px";
    tooltip.style.top = Math.max(0, y) + "px";
  }

  function nodeOfEvent(event) {
    var t = event.target;
    while (t && t !== graph && !(t.classList && t.classList.contains("cell"))) t = t.parentNode;
    return t && t !== graph ? Number(t.getAttribute("data-node")) : -1;
  }

  function fillThreads() {
    var select = el("thread");
    select.textContent = "";
    var process = Number(el("process").value);
    var all = document.createElement("option");
    all.value = String(process);
    all.textContent = "All threads";
    select.appendChild(all);
    select.disabled = process === 0;
    if (process === 0) return;
    children[process].forEach(function (t) {
      var o = document.createElement("option");
      o.value = String(t);
      o.textContent = nameOf(t) + " \u2014 " + percent(nodeValue[t], nodeValue[0]);
      select.appendChild(o);
    });
  }

  function select(base) {
    state.base = base;
    state.zoom = base;
    render();
  }

  function setup() {
    el("title").textContent = data.title || "krait profile";
    var processes = children[0];
    var threads = 0;
    processes.forEach(function (p) { threads += children[p].length; });
    var summary;
    if (data.weighted_by_time) {
      summary = timeText(nodeValue[0]) + (data.on_cpu ? " of wall-clock time" : " off CPU");
    } else {
      summary = nodeValue[0] + " samples";
      var time = cpuTime(nodeValue[0]);
      if (time) summary += " (" + time + " CPU)";
    }
    summary += " in " + processes.length + " process" + (processes.length === 1 ? "" : "es") +
               ", " + threads + " thread" + (threads === 1 ? "" : "s");
    if (data.start_time_unix_ns > 0) {
      summary += "; recorded " + new Date(data.start_time_unix_ns / 1e6).toISOString();
      if (data.duration_ns > 0) summary += " for " + (data.duration_ns / 1e9).toFixed(1) + " s";
    }
    el("summary").textContent = summary;

    var procSelect = el("process");
    var all = document.createElement("option");
    all.value = "0";
    all.textContent = "All processes";
    procSelect.appendChild(all);
    processes.forEach(function (p) {
      var o = document.createElement("option");
      o.value = String(p);
      o.textContent = nameOf(p) + " \u2014 " + percent(nodeValue[p], nodeValue[0]);
      procSelect.appendChild(o);
    });
    fillThreads();

    var legend = el("legend");
    ["python", "native", "kernel", "synthetic", "process", "thread"].forEach(function (k) {
      var item = document.createElement("span");
      var swatch = document.createElement("span");
      swatch.className = "swatch kind-" + k;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(KIND_LABELS[k]));
      legend.appendChild(item);
    });

    procSelect.addEventListener("change", function () {
      fillThreads();
      select(Number(procSelect.value));
    });
    el("thread").addEventListener("change", function () { select(Number(el("thread").value)); });
    el("reset").addEventListener("click", function () {
      state.zoom = state.base;
      render();
    });
    el("search").addEventListener("input", function () {
      state.query = el("search").value.trim().toLowerCase();
      highlight();
    });
    graph.addEventListener("click", function (event) {
      var node = nodeOfEvent(event);
      if (node < 0) return;
      state.zoom = node;
      render();
    });
    graph.addEventListener("mousemove", function (event) {
      var node = nodeOfEvent(event);
      if (node < 0) tooltip.hidden = true;
      else showTooltip(node, event);
    });
    graph.addEventListener("mouseleave", function () { tooltip.hidden = true; });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        state.zoom = state.base;
        render();
      }
    });
    var pending = false;
    window.addEventListener("resize", function () {
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        render();
      });
    });
    render();
  }

  setup();
}());
