// GET /dashboard: a live heatmap of expert load (layers x experts) and per-layer / per-node
// balance, drawn from GET /v1/experts/load every 2 seconds. Self-contained: inline CSS and JS,
// no external script, style sheet or font. Cells carry stable ids and data attributes
// (id="cell-L<layer>-E<expert>", data-total, data-recent) so that tests can read them.
#include "router/router_metrics.h"

namespace moemesh::router {

const char* DashboardHtml() {
  return R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>moemesh expert load</title>
<style>
  body { font-family: sans-serif; margin: 16px; color: #222; background: #fafafa; }
  h1 { font-size: 20px; margin: 0 0 4px 0; }
  h2 { font-size: 16px; margin: 18px 0 6px 0; }
  #status { font-size: 13px; color: #555; margin-bottom: 8px; }
  table { border-collapse: collapse; }
  #heatmap td, #heatmap th { width: 34px; height: 24px; text-align: center; font-size: 11px;
                             border: 1px solid #ddd; padding: 0; }
  #heatmap th { background: #eee; }
  #balance td, #balance th { border: 1px solid #ddd; padding: 3px 8px; font-size: 12px; }
  .bar { display: inline-block; height: 10px; background: #3b7dd8; vertical-align: middle; }
  label { font-size: 13px; margin-right: 12px; }
</style>
</head>
<body>
<h1>moemesh &mdash; expert load</h1>
<div id="status" data-loaded="0">loading&hellip;</div>
<div>
  <label><input type="radio" name="mode" value="total" checked> total (since start)</label>
  <label><input type="radio" name="mode" value="recent"> recent (last window)</label>
</div>
<h2>Routed tokens per expert (rows: MoE layers, columns: experts)</h2>
<table id="heatmap" data-mode="total"></table>
<h2>Balance (mean / max rows per expert node, recent window)</h2>
<table id="balance"></table>
<script>
"use strict";
let mode = "total";
let last = null;
document.querySelectorAll('input[name=mode]').forEach(function (input) {
  input.addEventListener('change', function () { mode = input.value; if (last) draw(last); });
});
function color(value, max) {
  if (max <= 0 || value <= 0) return "rgb(255,255,255)";
  const t = value / max;  // white -> yellow -> red
  const g = Math.round(255 * (1 - t * 0.85));
  const b = Math.round(255 * Math.max(0, 1 - 2 * t));
  return "rgb(255," + g + "," + b + ")";
}
function draw(data) {
  last = data;
  const table = document.getElementById('heatmap');
  table.setAttribute('data-mode', mode);
  const layers = data.layers || [];
  let experts = 0, max = 0;
  layers.forEach(function (l) {
    experts = Math.max(experts, l[mode].length);
    l[mode].forEach(function (v) { max = Math.max(max, v); });
  });
  let html = '<tr><th>layer</th>';
  for (let e = 0; e < experts; ++e) html += '<th>' + e + '</th>';
  html += '</tr>';
  layers.forEach(function (l) {
    html += '<tr id="row-L' + l.layer + '"><th>' + l.layer + '</th>';
    for (let e = 0; e < experts; ++e) {
      const v = l[mode][e] || 0;
      html += '<td class="cell" id="cell-L' + l.layer + '-E' + e + '" data-layer="' + l.layer +
              '" data-expert="' + e + '" data-total="' + (l.total[e] || 0) + '" data-recent="' +
              (l.recent[e] || 0) + '" style="background:' + color(v, max) + '" title="layer ' +
              l.layer + ', expert ' + e + ': ' + v + '">' + v + '</td>';
    }
    html += '</tr>';
  });
  table.innerHTML = html;

  const nodes = data.nodes || [];
  let b = '<tr><th>layer</th><th>balancedness</th>';
  nodes.forEach(function (n) {
    b += '<th>' + n.node + (n.healthy ? '' : ' (down)') + ' rows</th>';
  });
  b += '</tr>';
  layers.forEach(function (l, i) {
    const value = (l.balancedness === undefined ? 1 : l.balancedness);
    b += '<tr><td>' + l.layer + '</td><td id="balance-L' + l.layer + '" data-value="' +
         value + '"><span class="bar" style="width:' + Math.round(100 * value) + 'px"></span> ' +
         value.toFixed(3) + '</td>';
    nodes.forEach(function (n) {
      b += '<td data-node="' + n.node + '" data-layer="' + l.layer + '">' +
           Math.round(n.recent_rows[i]) + '</td>';
    });
    b += '</tr>';
  });
  document.getElementById('balance').innerHTML = b;
  const status = document.getElementById('status');
  status.setAttribute('data-loaded', String(Number(status.getAttribute('data-loaded')) + 1));
  status.setAttribute('data-placement-version', String(data.placement ? data.placement.version : 0));
  status.textContent = 'placement version ' + (data.placement ? data.placement.version : 0) +
      ', ' + layers.length + ' MoE layers x ' + experts + ' experts, recent window ' +
      (data.window_seconds || 0) + ' s, updated ' + new Date().toLocaleTimeString();
}
function refresh() {
  fetch('/v1/experts/load', {cache: 'no-store'})
      .then(function (r) { return r.json(); })
      .then(draw)
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
