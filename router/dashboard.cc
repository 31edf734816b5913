// GET /dashboard: a live, compact heatmap of expert load (MoE layers x logical experts, a few
// pixels per cell, so the real model's 58 x 256 fits one screen) with each layer's balancedness
// beside it, replicated experts marked, and per expert node its load, replicas held, health and
// drain state; drawn from GET /v1/experts/load and GET /v1/placement every 2 seconds.
// Self-contained: inline CSS and JS, SVG drawing, no external script, style sheet or font.
// Cells carry stable ids and data attributes (an SVG <rect class="cell"
// id="cell-L<layer>-E<expert>" data-layer data-expert data-total data-recent data-replicas>) so
// that tests can read them; the number shows on hover (a <title> and the readout line).
// With API keys on the router (api_auth.h) the page sends `Authorization: Bearer <key>` on its
// fetches: the key comes from the address's fragment (/dashboard#key=K: never sent to the
// server, removed from the address bar once read), else from earlier in the same tab
// (sessionStorage), else from a key field the page shows after a 401. An admin key also shows
// the placement's drain states (GET /v1/placement is an admin path).
#include "router/router_metrics.h"

namespace moemesh::router {

const char* DashboardHtml() {
  return R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>moemesh expert load</title>
<style>
  body { font-family: sans-serif; margin: 12px; color: #222; background: #fafafa; }
  h1 { font-size: 18px; margin: 0 0 4px 0; }
  h2 { font-size: 14px; margin: 12px 0 4px 0; }
  #status, #readout { font-size: 12px; color: #555; margin-bottom: 4px; min-height: 15px; }
  label { font-size: 12px; margin-right: 12px; }
  #wrap { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
  svg text { font-size: 9px; fill: #555; }
  #nodes td, #nodes th { border: 1px solid #ddd; padding: 2px 6px; font-size: 12px; }
  #nodes { border-collapse: collapse; }
  .bar { display: inline-block; height: 9px; background: #3b7dd8; vertical-align: middle; }
</style>
</head>
<body>
<h1>moemesh &mdash; expert load</h1>
<div id="status" data-loaded="0" data-auth="none">loading&hellip;</div>
<form id="keyform" hidden>
  <label>API key <input type="password" id="apikey" autocomplete="off" size="32"></label>
  <button type="submit">use</button>
</form>
<div>
  <label><input type="radio" name="mode" value="total" checked> total (since start)</label>
  <label><input type="radio" name="mode" value="recent"> recent (last window)</label>
</div>
<div id="readout">hover a cell for its routed tokens and replicas</div>
<div id="wrap">
  <div>
    <h2>Routed tokens (rows: MoE layers, columns: logical experts; outlined: replicated)</h2>
    <svg id="heatmap" data-mode="total" width="10" height="10"></svg>
  </div>
  <div>
    <h2>Expert nodes</h2>
    <table id="nodes"></table>
  </div>
</div>
<script>
"use strict";
let mode = "total";
// The API key (see the comment in router/dashboard.cc).
let apiKey = null, needKey = false;
(function () {
  const match = /(?:^#|&)key=([^&]*)/.exec(location.hash);
  if (match) {
    apiKey = decodeURIComponent(match[1]);
    try { sessionStorage.setItem('moemesh-api-key', apiKey); } catch (e) {}
    history.replaceState(null, '', location.pathname + location.search);
  } else {
    try { apiKey = sessionStorage.getItem('moemesh-api-key'); } catch (e) {}
  }
  if (apiKey) document.getElementById('status').setAttribute('data-auth', 'key');
})();
function get(path) {
  const headers = {};
  if (apiKey) headers['Authorization'] = 'Bearer ' + apiKey;
  return fetch(path, {cache: 'no-store', headers: headers});
}
document.getElementById('keyform').addEventListener('submit', function (event) {
  event.preventDefault();
  apiKey = document.getElementById('apikey').value.trim();
  try { sessionStorage.setItem('moemesh-api-key', apiKey); } catch (e) {}
  needKey = false;
  document.getElementById('keyform').hidden = true;
  document.getElementById('status').setAttribute('data-auth', 'key');
  refresh();
});
function askForKey(rejected) {
  needKey = true;
  document.getElementById('keyform').hidden = false;
  const status = document.getElementById('status');
  status.setAttribute('data-auth', rejected ? 'rejected' : 'needed');
  status.textContent = (rejected ? 'the router refused this API key (401)' :
      'the router needs an API key (401)') + ': enter it below, or open /dashboard#key=KEY';
}
let last = null, placement = null;
document.querySelectorAll('input[name=mode]').forEach(function (input) {
  input.addEventListener('change', function () { mode = input.value; if (last) draw(last); });
});
function color(value, max) {
  if (max <= 0 || value <= 0) return "rgb(255,255,255)";
  // Log scale: real traffic is Zipf-like, a linear scale would leave all but the hottest white.
  const t = Math.log(1 + value) / Math.log(1 + max);  // white -> yellow -> red
  const g = Math.round(255 * (1 - t * 0.85));
  const b = Math.round(255 * Math.max(0, 1 - 2 * t));
  return "rgb(255," + g + "," + b + ")";
}
function esc(s) { return String(s).replace(/[&<>"]/g, function (c) {
  return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
function draw(data) {
  last = data;
  const svg = document.getElementById('heatmap');
  svg.setAttribute('data-mode', mode);
  const layers = data.layers || [];
  let experts = 0, max = 0;
  layers.forEach(function (l) {
    experts = Math.max(experts, l[mode].length);
    l[mode].forEach(function (v) { max = Math.max(max, v); });
  });
  // Replicas per (layer, expert) from the placement in the load body.
  const replicas = {};
  ((data.placement || {}).experts || []).forEach(function (r) {
    replicas[r.layer + ':' + r.expert] = r.nodes;
  });
  const cw = Math.max(3, Math.min(24, Math.floor(1024 / Math.max(1, experts))));
  const ch = Math.max(3, Math.min(24, Math.floor(360 / Math.max(1, layers.length))));
  const left = 26, top = 12, barWidth = 60, gap = 8;
  const width = left + experts * cw + gap + barWidth + 40, height = top + layers.length * ch + 4;
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  let s = '';
  for (let e = 0; e < experts; e += (experts > 32 ? 32 : 4)) {
    s += '<text x="' + (left + e * cw) + '" y="9">' + e + '</text>';
  }
  layers.forEach(function (l, i) {
    const y = top + i * ch;
    if (layers.length <= 64 && (ch >= 8 || i % 4 === 0)) {
      s += '<text x="0" y="' + (y + Math.min(ch, 9)) + '">' + l.layer + '</text>';
    }
    for (let e = 0; e < experts; ++e) {
      const v = l[mode][e] || 0;
      const nodes = replicas[l.layer + ':' + e] || [];
      const title = 'layer ' + l.layer + ', expert ' + e + ': ' + v + ' tokens (' + mode +
          '); replicas: ' + (nodes.length ? nodes.join(', ') : 'none');
      s += '<rect class="cell" id="cell-L' + l.layer + '-E' + e + '" data-layer="' + l.layer +
           '" data-expert="' + e + '" data-total="' + (l.total[e] || 0) + '" data-recent="' +
           (l.recent[e] || 0) + '" data-replicas="' + nodes.length + '" x="' + (left + e * cw) +
           '" y="' + y + '" width="' + cw + '" height="' + ch + '" fill="' + color(v, max) + '"' +
           (nodes.length > 1 ? ' stroke="#1a4fa0" stroke-width="1"' : '') +
           '><title>' + esc(title) + '</title></rect>';
    }
    const value = (l.balancedness === undefined ? 1 : l.balancedness);
    const bx = left + experts * cw + gap;
    s += '<rect id="balance-L' + l.layer + '" data-value="' + value + '" x="' + bx + '" y="' + y +
         '" width="' + Math.max(1, Math.round(barWidth * value)) + '" height="' +
         Math.max(2, ch - 1) + '" fill="#3b7dd8"><title>layer ' + l.layer + ' balancedness ' +
         value.toFixed(3) + '</title></rect>';
    if (ch >= 8) {
      s += '<text x="' + (bx + barWidth + 4) + '" y="' + (y + Math.min(ch, 9)) + '">' +
           value.toFixed(2) + '</text>';
    }
  });
  s += '<text x="' + (left + experts * cw + gap) + '" y="9">balance</text>';
  svg.innerHTML = s;

  // Per node: load (recent rows summed over layers), physical experts held, state.
  const held = {};
  Object.keys(replicas).forEach(function (k) {
    replicas[k].forEach(function (n) { held[n] = (held[n] || 0) + 1; });
  });
  const states = {};
  ((placement || {}).expert_nodes || []).forEach(function (n) { states[n.node] = n; });
  const nodes = data.nodes || [];
  let total = 0, peak = 0;
  nodes.forEach(function (n) {
    n.sum = (n.recent_rows || []).reduce(function (a, b) { return a + b; }, 0);
    total += n.sum; peak = Math.max(peak, n.sum);
  });
  let t = '<tr><th>node</th><th>state</th><th>replicas held</th><th>recent rows</th></tr>';
  nodes.forEach(function (n) {
    const st = states[n.node] || {};
    const state = (n.healthy ? 'healthy' : 'down') +
        (st.drain_state ? ', drain ' + st.drain_state : '');
    t += '<tr data-node="' + esc(n.node) + '"><td>' + esc(n.node) + '</td><td>' + esc(state) +
         '</td><td>' + (held[n.node] || 0) + '</td><td><span class="bar" style="width:' +
         (peak > 0 ? Math.round(120 * n.sum / peak) : 0) + 'px"></span> ' + Math.round(n.sum) +
         '</td></tr>';
  });
  document.getElementById('nodes').innerHTML = t;
  const status = document.getElementById('status');
  status.setAttribute('data-loaded', String(Number(status.getAttribute('data-loaded')) + 1));
  status.setAttribute('data-placement-version', String(data.placement ? data.placement.version : 0));
  const target = placement && placement.target ? ', target version ' + placement.target.version +
      ' loading' : '';
  status.textContent = 'placement version ' + (data.placement ? data.placement.version : 0) +
      target + ', ' + layers.length + ' MoE layers x ' + experts + ' experts, recent window ' +
      (data.window_seconds || 0) + ' s, node balance ' +
      (peak > 0 ? (total / nodes.length / peak).toFixed(3) : '1.000') + ', updated ' +
      new Date().toLocaleTimeString();
}
document.getElementById('heatmap').addEventListener('mousemove', function (event) {
  const cell = event.target.closest ? event.target.closest('rect') : null;
  const title = cell ? cell.querySelector('title') : null;
  if (title) document.getElementById('readout').textContent = title.textContent;
});
function refresh() {
  if (needKey) return;  // nothing to show until a key is entered
  // The placement (drain states) is optional: an admin path, refused to an API key.
  get('/v1/placement')
      .then(function (r) { return r.ok ? r.json() : null; })
      .catch(function () { return null; })
      .then(function (p) { placement = p; return get('/v1/experts/load'); })
      .then(function (r) {
        if (r.status === 401) { askForKey(apiKey !== null && apiKey !== ''); return null; }
        if (!r.ok) throw new Error('GET /v1/experts/load: HTTP ' + r.status);
        return r.json();
      })
      .then(function (data) { if (data) draw(data); })
      .catch(function (e) { document.getElementById('status').textContent = 'error: ' + e; });
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";
}

}  // namespace moemesh::router
