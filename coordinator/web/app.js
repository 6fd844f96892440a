// presage web view: a page per route (#/, #/vm/ID, #/ecosystem, #/plans), each drawn from the
// coordinator's REST API (/v1/...) on the same origin; the browser's client certificate is the
// caller's identity. No build step, no network but the coordinator.
'use strict';

const main = document.getElementById('main');
let pageTimer = null;   // a page's refresh, cleared on navigation
let pageCharts = [];    // uPlot instances, destroyed on navigation

// ---------------------------------------------------------------------------------------------
// Helpers

async function api(path) {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const why = body && body.reason ? body.reason : r.statusText;
    const e = new Error(`${path}: ${r.status} ${why}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const num = (x) => (typeof x === 'string' ? Number(x) : (x ?? 0));
const fmtMhz = (x) => (x >= 10000 ? `${(x / 1000).toFixed(1)} GHz` : `${Math.round(x)} MHz`);
const fmtBytes = (b) => {
  b = num(b);
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
};
const pct = (a, b) => (b > 0 ? Math.min(100, (100 * a) / b) : 0);
const vmLink = (id, label) => el('a', { href: `#/vm/${encodeURIComponent(id)}`, class: 'vm-link', 'data-vm': id }, label || id);

function bar(used, cap, title) {
  const p = pct(used, cap);
  return el('span', { class: `bar ${p > 90 ? 'hot' : p > 70 ? 'warm' : ''}`, title: title || `${p.toFixed(0)} %` },
    el('span', { style: `width:${p.toFixed(1)}%` }));
}

function pill(text, cls) { return el('span', { class: `pill ${cls || text}` }, text); }

function showError(where, e) {
  where.append(el('p', { class: 'error' }, e.message || String(e)));
}

// A small chart without a library: the history line, the forecast band and median, the
// capacity line. Drawn on a canvas so a thousand hosts draw in a few milliseconds.
function sparkline(history, p10, p50, p90, capacity) {
  const c = el('canvas', { class: 'spark', width: 320, height: 56 });
  const g = c.getContext('2d');
  const n = history.length + p50.length;
  if (n < 2) return c;
  const top = Math.max(capacity || 0, ...history, ...p90, 1);
  const x = (i) => (i / (n - 1)) * (c.width - 2) + 1;
  const y = (v) => c.height - 2 - (v / top) * (c.height - 4);
  if (p10.length && p90.length) {
    g.fillStyle = 'rgba(47,111,219,0.18)';
    g.beginPath();
    p90.forEach((v, i) => g.lineTo(x(history.length + i), y(v)));
    for (let i = p10.length - 1; i >= 0; i--) g.lineTo(x(history.length + i), y(p10[i]));
    g.closePath();
    g.fill();
  }
  const line = (vals, offset, style, dash) => {
    g.strokeStyle = style; g.lineWidth = 2; g.setLineDash(dash || []);
    g.beginPath();
    vals.forEach((v, i) => (i ? g.lineTo(x(offset + i), y(v)) : g.moveTo(x(offset + i), y(v))));
    g.stroke();
  };
  if (history.length) line(history, 0, '#1d2330');
  if (p50.length) line(p50, history.length, '#2f6fdb', [4, 3]);
  if (capacity) { g.strokeStyle = '#d64545'; g.lineWidth = 1; g.setLineDash([2, 2]); g.beginPath(); g.moveTo(0, y(capacity)); g.lineTo(c.width, y(capacity)); g.stroke(); }
  return c;
}

// A uPlot chart of a history and a forecast band on one time axis (seconds).
function timeChart(target, title, unit, hist, fc, cap) {
  // hist: [[t, v]...]; fc: {t: [...], p10, p50, p90}
  const ts = [...hist.map((p) => p[0]), ...fc.t];
  const nH = hist.length;
  const pad = (arr, before) => [...Array(before).fill(null), ...arr];
  const data = [
    ts,
    [...hist.map((p) => p[1]), ...Array(fc.t.length).fill(null)],
    pad(fc.p10, nH), pad(fc.p50, nH), pad(fc.p90, nH),
  ];
  const series = [
    {},
    { label: 'measured', stroke: '#1d2330', width: 2 },
    { label: 'p10', stroke: 'rgba(47,111,219,0.5)', width: 1 },
    { label: 'forecast p50', stroke: '#2f6fdb', width: 2, dash: [6, 4] },
    { label: 'p90', stroke: 'rgba(47,111,219,0.5)', width: 1 },
  ];
  if (cap) {
    data.push(ts.map(() => cap));
    series.push({ label: 'capacity', stroke: '#d64545', width: 1, dash: [3, 3] });
  }
  const width = Math.max(360, target.clientWidth - 24 || 700);
  const opts = {
    title, width, height: 260, series,
    bands: [{ series: [4, 2], fill: 'rgba(47,111,219,0.16)' }],
    axes: [{}, { label: unit, size: 60 }],
    scales: { x: { time: true } },
  };
  const chart = new uPlot(opts, data, target);
  pageCharts.push(chart);
  return chart;
}

// ---------------------------------------------------------------------------------------------
// Overview: the cluster's totals and chart, then each host with its bars and forecast band.

async function overviewPage() {
  const o = await api('/v1/overview');
  main.replaceChildren();
  main.append(el('h1', {}, 'Cluster'));
  main.append(el('div', { class: 'tiles', id: 'tiles' },
    el('div', { class: 'tile' }, el('b', {}, o.hosts_total), 'hosts'),
    el('div', { class: 'tile' }, el('b', {}, o.vms_total), 'VMs'),
    el('div', { class: 'tile' }, el('b', {}, `${pct(o.cpu_used_mhz, o.cpu_capacity_mhz).toFixed(0)} %`), `CPU: ${fmtMhz(o.cpu_used_mhz)} of ${fmtMhz(o.cpu_capacity_mhz)}`),
    el('div', { class: 'tile' }, el('b', {}, `${pct(o.memory_used_bytes, o.memory_capacity_bytes).toFixed(0)} %`), `memory: ${fmtBytes(o.memory_used_bytes)} of ${fmtBytes(o.memory_capacity_bytes)}`),
    el('div', { class: 'tile' }, el('b', {}, o.planned_moves), el('a', { href: '#/plans' }, 'moves planned')),
    el('div', { class: 'tile' }, el('b', {}, o.plans_executing), 'plans executing')));

  // The cluster's demand and forecast: the hosts' sums, step by step.
  const chartBox = el('div', { class: 'card', id: 'cluster-chart' });
  main.append(chartBox);
  const sumAt = (key) => {
    const out = [];
    for (const h of o.hosts) (h[key] || []).forEach((v, i) => { out[i] = (out[i] || 0) + (v ?? 0); });
    return out;
  };
  // Hosts are sampled in step: their histories align from the end, on the clock of the
  // longest (trace time on simulated hosts, Unix time on real ones).
  const hist = [];
  let times = [];
  for (const h of o.hosts) {
    const off = 24 - h.history_mhz.length;
    h.history_mhz.forEach((v, i) => { hist[off + i] = (hist[off + i] || 0) + v; });
    if (h.history_at_s.length > times.length) times = h.history_at_s;
  }
  const histVals = hist.filter((v) => v !== undefined);
  const step = Math.max(1, ...o.hosts.map((h) => h.step_seconds || 0));
  const first = Math.max(0, ...o.hosts.map((h) => h.forecast_first_s || 0));
  const p50 = sumAt('forecast_p50_mhz');
  const t0 = times.length ? times[times.length - 1] : 0;
  const measured = histVals.map((v, i) => [times[times.length - histVals.length + i] ?? t0, v]);
  const fcTimes = p50.map((_, i) => first + i * step);
  const keep = fcTimes.map((t) => t > t0);
  const only = (a) => a.filter((_, i) => keep[i]);
  timeChart(chartBox, 'Cluster CPU demand: measured and forecast (p10–p90)', 'MHz', measured,
    { t: only(fcTimes), p10: only(sumAt('forecast_p10_mhz')), p50: only(p50), p90: only(sumAt('forecast_p90_mhz')) },
    o.cpu_capacity_mhz);

  main.append(el('h2', {}, 'Hosts'));
  const tbody = el('tbody');
  const table = el('table', { id: 'hosts' },
    el('thead', {}, el('tr', {}, ['host', 'state', 'VMs', 'CPU', '', 'memory', 'demand · forecast'].map((h) => el('th', {}, h)))),
    tbody);
  main.append(table);
  const hosts = [...o.hosts].sort((a, b) => a.host_id.localeCompare(b.host_id));
  for (const h of hosts) {
    const state = !h.reachable ? pill('unreachable') : h.drained ? pill('drained') : pill('up', 'ok');
    const row = el('tr', { class: 'host', 'data-host': h.host_id, title: 'show its VMs' },
      el('td', {}, h.host_id), el('td', {}, state), el('td', { class: 'num' }, h.vms.length),
      el('td', {}, bar(h.cpu_used_mhz, h.cpu_capacity_mhz)),
      el('td', { class: 'num' }, `${fmtMhz(h.cpu_used_mhz)} / ${fmtMhz(h.cpu_capacity_mhz)}`),
      el('td', {}, bar(num(h.memory_used_bytes), num(h.memory_capacity_bytes), `${fmtBytes(h.memory_used_bytes)} of ${fmtBytes(h.memory_capacity_bytes)}`)),
      el('td', {}, sparkline(h.history_mhz, h.forecast_p10_mhz, h.forecast_p50_mhz, h.forecast_p90_mhz, h.cpu_capacity_mhz)));
    let detail = null;
    row.addEventListener('click', () => {
      if (detail) { detail.remove(); detail = null; row.classList.remove('open'); return; }
      const vms = [...h.vms].sort((a, b) => b[2] - a[2]);
      detail = el('tr', { class: 'host-vms' }, el('td', { colspan: 7 },
        el('div', { class: 'vms' }, vms.length ? vms.map(([id, name, mhz]) => vmLink(id, `${name || id} · ${fmtMhz(mhz)}`)) : el('span', { class: 'muted' }, 'no VMs'))));
      row.after(detail);
      row.classList.add('open');
    });
    tbody.append(row);
  }
}

// ---------------------------------------------------------------------------------------------
// A VM: its samples and forecast band, anomalies, why it is where it is, its dependencies.

function vmSeries(info) {
  const s = info.sample || {};
  const f = s.forecast;
  const step = f && f.step_seconds ? f.step_seconds : 300;
  // One time axis: simulated hosts count trace steps, real hosts Unix seconds.
  const hist = info.usage_history || [];
  const simulated = hist.some((p) => num(p.trace_step) > 0);
  const tOf = (p) => (simulated ? num(p.trace_step) * step : num(p.sampled_at_ms) / 1000);
  const cpu = hist.map((p) => [tOf(p), 100 * (p.cpu_utilisation ?? 0)]);
  const mem = hist.filter((p) => p.memory_utilisation > 0).map((p) => [tOf(p), 100 * p.memory_utilisation]);
  const fc = { t: [], p10: [], p50: [], p90: [] };
  const mfc = { t: [], p10: [], p50: [], p90: [] };
  if (f) {
    const first = num(f.first_step) * step;
    const times = (f.cpu_p50 || []).map((_, i) => first + i * step);
    Object.assign(fc, { t: times, p10: (f.cpu_p10 || []).map((v) => 100 * v), p50: (f.cpu_p50 || []).map((v) => 100 * v), p90: (f.cpu_p90 || []).map((v) => 100 * v) });
    if (f.memory && (f.memory.p50 || []).length) {
      Object.assign(mfc, { t: f.memory.p50.map((_, i) => first + i * step), p10: f.memory.p10.map((v) => 100 * v), p50: f.memory.p50.map((v) => 100 * v), p90: f.memory.p90.map((v) => 100 * v) });
    }
  }
  // Forecast steps already measured are drawn from the first step after the last sample.
  const last = cpu.length ? cpu[cpu.length - 1][0] : -Infinity;
  const after = (x) => {
    const keep = x.t.map((t) => t > last);
    return { t: x.t.filter((_, i) => keep[i]), p10: x.p10.filter((_, i) => keep[i]), p50: x.p50.filter((_, i) => keep[i]), p90: x.p90.filter((_, i) => keep[i]) };
  };
  return { cpu, mem, fc: after(fc), mfc: after(mfc), forecaster: f ? f.forecaster : null };
}

async function vmPage(id) {
  const [list, explain, anomalies, deps] = await Promise.all([
    api(`/v1/vms/${encodeURIComponent(id)}`),
    api(`/v1/vms/${encodeURIComponent(id)}/explain?top=5`).catch((e) => e),
    api(`/v1/vms/${encodeURIComponent(id)}/anomalies?limit=20`).catch((e) => e),
    api(`/v1/vms/${encodeURIComponent(id)}/dependencies`).catch((e) => e),
  ]);
  const info = list.vms[0];
  const s = info.sample || {};
  main.replaceChildren();
  main.append(el('h1', {}, `VM ${s.name || s.vm_id}`));
  main.append(el('div', { class: 'tiles', id: 'vm-tiles' },
    el('div', { class: 'tile' }, el('b', {}, info.host_id), 'host'),
    el('div', { class: 'tile' }, el('b', {}, s.vcpus), 'vCPUs'),
    el('div', { class: 'tile' }, el('b', {}, fmtBytes(s.memory_bytes)), 'memory'),
    el('div', { class: 'tile' }, el('b', {}, `${(100 * (s.cpu_utilisation || 0)).toFixed(0)} %`), `CPU now (${fmtMhz(info.cpu_demand_mhz || 0)})`),
    el('div', { class: 'tile' }, el('b', {}, (s.state || '').replace('VM_STATE_', '').toLowerCase()), 'state')));

  const series = vmSeries(info);
  const grid = el('div', { class: 'grid2' });
  const left = el('div');
  const right = el('div');
  grid.append(left, right);
  main.append(grid);
  const cpuBox = el('div', { class: 'card', id: 'vm-cpu-chart' });
  left.append(cpuBox);
  timeChart(cpuBox, `CPU, % of its vCPUs: measured and forecast (${series.forecaster || 'no forecast yet'}), p10–p90`, '%', series.cpu, series.fc, 100);
  if (series.mem.length || series.mfc.t.length) {
    const memBox = el('div', { class: 'card' });
    left.append(memBox);
    timeChart(memBox, 'Memory in use, % of its allocation', '%', series.mem, series.mfc, 100);
  }

  // Anomalies.
  const an = el('div', { class: 'card', id: 'vm-anomalies' }, el('h2', {}, 'Anomalies'));
  if (anomalies instanceof Error) showError(an, anomalies);
  else if (!anomalies.anomalies.length) an.append(el('p', { class: 'muted' }, 'none reported'));
  else {
    an.append(el('table', {}, el('thead', {}, el('tr', {}, ['when', 'series', 'value', 'expected', 'score'].map((h) => el('th', {}, h)))),
      el('tbody', {}, anomalies.anomalies.map((a) => el('tr', {},
        el('td', { class: 'num' }, new Date(num(a.at_ms)).toLocaleString()), el('td', {}, a.series),
        el('td', { class: 'num' }, (a.value ?? 0).toFixed(3)), el('td', { class: 'num' }, (a.expected ?? 0).toFixed(3)),
        el('td', { class: 'num' }, (a.score ?? 0).toFixed(2)))))));
  }
  left.append(an);

  // Explanation.
  const ex = el('div', { class: 'card', id: 'vm-explain' }, el('h2', {}, 'Why it is where it is'));
  if (explain instanceof Error) showError(ex, explain);
  else {
    ex.append(el('p', {}, explain.planned && explain.planned_move
      ? ['The plan moves it to ', el('b', {}, explain.planned_move.to_host), `: ${explain.planned_move.reason}.`]
      : `It stays on ${explain.host_id}. Demand from its ${explain.demand_source}; ${explain.feasible_hosts} hosts could take it.`));
    const terms = (h) => (h.terms || []).filter((t) => Math.abs(t.contribution) > 1e-9).map((t) => `${t.scorer} ${t.contribution.toFixed(3)}`).join(', ');
    ex.append(el('table', {}, el('thead', {}, el('tr', {}, ['host', 'score', 'risk after', 'parts'].map((h) => el('th', {}, h)))),
      el('tbody', {}, (explain.ranking || []).map((h) => el('tr', {},
        el('td', {}, h.host_id === explain.host_id ? el('b', {}, `${h.host_id} (now)`) : h.host_id),
        el('td', { class: 'num' }, (h.score ?? 0).toFixed(3)), el('td', { class: 'num' }, (h.risk_after ?? 0).toExponential(1)),
        el('td', { class: 'muted' }, terms(h)))))));
  }
  right.append(ex);

  // Dependencies.
  const dp = el('div', { class: 'card', id: 'vm-dependencies' }, el('h2', {}, 'Dependencies'));
  if (deps instanceof Error) {
    dp.append(el('p', { class: 'muted' }, deps.status === 404 ? 'No declaration names this VM.' : deps.message));
  } else {
    const n = deps.node || {};
    dp.append(el('p', {}, pill(n.status || 'unknown'), ` score ${(n.score ?? 0).toFixed(2)}`, n.reason ? ` — ${n.reason}` : ''));
    dp.append(el('table', {}, el('thead', {}, el('tr', {}, ['from', 'to', 'dependency', 'strength', 'satisfaction'].map((h) => el('th', {}, h)))),
      el('tbody', {}, (deps.edges || []).map((e) => el('tr', {},
        el('td', {}, vmLink(e.from)), el('td', {}, vmLink(e.to)), el('td', {}, e.dependency), el('td', {}, e.strength),
        el('td', { class: 'num' }, (e.satisfaction ?? 0).toFixed(2)))))));
  }
  right.append(dp);
}

// ---------------------------------------------------------------------------------------------
// The ecosystem graph: nodes coloured by score, bordered by status; edges by satisfaction.

const scoreColour = (s) => `hsl(${Math.round(120 * Math.max(0, Math.min(1, s)))}, 62%, 44%)`;

async function ecosystemPage() {
  const v = await api('/v1/ecosystem');
  main.replaceChildren();
  main.append(el('h1', {}, 'Ecosystem'));
  main.append(el('div', { class: 'legend' },
    el('span', {}, el('i', { style: `background:${scoreColour(1)}` }), 'score 1 (met)'),
    el('span', {}, el('i', { style: `background:${scoreColour(0.5)}` }), '0.5'),
    el('span', {}, el('i', { style: `background:${scoreColour(0)}` }), '0 (unmet)'),
    el('span', {}, 'border: red non-compliant, amber pending · edges: colour by satisfaction, dashed preferred'),
    el('span', { id: 'graph-count' }, `${v.nodes.length} VMs, ${v.edges.length} dependencies`)));
  const box = el('div', { id: 'graph' });
  main.append(box);
  if (!v.nodes.length) {
    box.append(el('p', { class: 'muted', style: 'padding:12px' }, 'No dependency declarations yet (presagectl dependencies set FILE).'));
    return;
  }
  const elements = [
    ...v.nodes.map((n) => ({ data: { id: n.vm, label: n.vm, score: n.score, status: n.status, host: n.host || '' } })),
    ...v.edges.map((e, i) => ({ data: { id: `e${i}`, source: e.from, target: e.to, satisfaction: e.satisfaction, strength: e.strength } })),
  ];
  const big = v.nodes.length > 400;
  const cy = cytoscape({
    container: box,
    elements,
    wheelSensitivity: 0.3,
    style: [
      { selector: 'node', style: { 'background-color': (n) => scoreColour(n.data('score')), label: 'data(label)', 'font-size': 10, color: '#1d2330', 'text-valign': 'bottom', 'text-margin-y': 3, width: 22, height: 22, 'border-width': 2, 'border-color': '#ffffff' } },
      { selector: 'node[status = "NonCompliant"]', style: { 'border-color': '#d64545', 'border-width': 4 } },
      { selector: 'node[status = "Pending"]', style: { 'border-color': '#d8a21b', 'border-width': 4, 'border-style': 'dashed' } },
      { selector: 'edge', style: { width: 2, 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'line-color': (e) => scoreColour(e.data('satisfaction')), 'target-arrow-color': (e) => scoreColour(e.data('satisfaction')) } },
      { selector: 'edge[strength = "preferred"]', style: { 'line-style': 'dashed' } },
    ],
    layout: big ? { name: 'grid' } : { name: 'cose', animate: false, nodeRepulsion: 8000, idealEdgeLength: 80 },
  });
  cy.on('tap', 'node', (evt) => { location.hash = `#/vm/${encodeURIComponent(evt.target.id())}`; });
  window.presageGraph = cy;
}

// ---------------------------------------------------------------------------------------------
// Plans: the current plan with each move's reason and scores, and the executor's journal with
// live migration progress (refreshed every 2 s).

function progressOf(m) {
  const p = m.progress;
  if (!p || !num(p.data_total)) return m.step === 'done' ? '' : '';
  const f = num(p.data_processed) / num(p.data_total);
  return el('span', {}, el('span', { class: 'progress', title: `${(100 * f).toFixed(0)} %` }, el('span', { style: `width:${(100 * f).toFixed(1)}%` })),
    ` ${(100 * f).toFixed(0)} % · ${fmtBytes(p.bytes_per_s)}/s`);
}

async function plansPage() {
  const draw = async () => {
    const [plan, journal] = await Promise.all([api('/v1/plan'), api('/v1/plans?limit=20')]);
    const box = el('div');
    box.append(el('h1', {}, 'Current plan'));
    if (!plan.available) box.append(el('p', { class: 'muted' }, 'No policy pass has run yet.'));
    else if (!(plan.moves || []).length) box.append(el('p', { class: 'muted', id: 'plan-empty' }, `Nothing to move: the last pass (${plan.policy}, ${plan.hosts_considered} hosts, ${plan.vms_considered} VMs, ${Math.round(num(plan.age_ms) / 1000)} s ago) keeps every VM where it is.`));
    else {
      box.append(el('table', { id: 'plan' }, el('thead', {}, el('tr', {}, ['VM', 'from', 'to', 'reason', 'benefit − cost (J)', 'chosen', 'runner-up'].map((h) => el('th', {}, h)))),
        el('tbody', {}, plan.moves.map((m) => el('tr', {},
          el('td', {}, vmLink(m.vm_id)), el('td', {}, m.from_host), el('td', {}, m.to_host), el('td', {}, m.reason),
          el('td', { class: 'num' }, ((m.benefit_j ?? 0) - (m.cost_j ?? 0)).toFixed(0)),
          el('td', { class: 'num' }, m.chosen ? `${m.chosen.host_id} ${(m.chosen.score ?? 0).toFixed(3)}` : ''),
          el('td', { class: 'num' }, m.runner_up ? `${m.runner_up.host_id} ${(m.runner_up.score ?? 0).toFixed(3)}` : ''))))));
    }
    box.append(el('h2', {}, 'Journal'));
    const plans = journal.plans || [];
    if (!plans.length) box.append(el('p', { class: 'muted' }, 'No plan has been executed yet.'));
    for (const p of plans) {
      box.append(el('div', { class: 'card journal-plan', 'data-plan': p.id },
        el('p', {}, el('b', {}, `Plan ${p.id}`), ' ', pill(p.status), ` ${p.origin} · ${new Date(num(p.created_unix_ms)).toLocaleString()}`,
          num(p.rollback_of) ? ` · rolls back plan ${p.rollback_of}` : ''),
        el('table', {}, el('thead', {}, el('tr', {}, ['VM', 'from', 'to', 'reason', 'step', 'progress', 'took', 'detail'].map((h) => el('th', {}, h)))),
          el('tbody', {}, (p.moves || []).map((m) => el('tr', {},
            el('td', {}, vmLink(m.vm_id)), el('td', {}, m.from_host), el('td', {}, m.to_host), el('td', {}, m.reason),
            el('td', {}, pill(m.step)), el('td', {}, progressOf(m)),
            el('td', { class: 'num' }, num(m.duration_ms) ? `${(num(m.duration_ms) / 1000).toFixed(1)} s` : ''),
            el('td', { class: 'muted' }, m.detail || '')))))));
    }
    main.replaceChildren(box);
  };
  await draw();
  pageTimer = setInterval(() => draw().catch((e) => console.warn(e)), 2000);
}

// ---------------------------------------------------------------------------------------------
// Routing.

async function route() {
  if (pageTimer) { clearInterval(pageTimer); pageTimer = null; }
  pageCharts.forEach((c) => c.destroy());
  pageCharts = [];
  const hash = location.hash || '#/';
  const vm = hash.match(/^#\/vm\/(.+)$/);
  const page = vm ? 'vm' : hash === '#/ecosystem' ? 'ecosystem' : hash === '#/plans' ? 'plans' : 'overview';
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === page));
  document.body.dataset.page = page;
  delete document.body.dataset.ready;
  main.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  try {
    if (vm) await vmPage(decodeURIComponent(vm[1]));
    else if (page === 'ecosystem') await ecosystemPage();
    else if (page === 'plans') await plansPage();
    else await overviewPage();
  } catch (e) {
    main.replaceChildren();
    showError(main, e);
  }
  // Tests and benchmarks wait for this: the page has drawn its data.
  document.body.dataset.ready = page;
  window.presageRendered = performance.now();
}

window.addEventListener('hashchange', route);
route();
