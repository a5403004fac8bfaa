// StackLens dashboard: reads the JSON API (/metrics, /health-status,
// /alerts, /health, /slos) every 5 seconds and updates the page in place.
import { LineChart, fmtClock } from './chart.js';
import { SLOPanel } from './slo.js';

const REFRESH_MS = 5000;
const KEY_STORE = 'stacklens.apiKey';
const ROLE_STORE = 'stacklens.role';
// The configured windows (AGGREGATION_WINDOWS) come from
// /dashboard/windows.json at start (loadWindows); these are the defaults
// until then, or when it cannot be read.
const WINDOW_MS = { '1min': 60e3, '5min': 300e3, '1hour': 3600e3 };
const WINDOW_NAME = { '1min': '1-minute', '5min': '5-minute', '1hour': '1-hour' };
const DEFAULT_RANGE = { '1min': 3600, '5min': 21600, '1hour': 604800 };
const UNIT_WORD = { min: 'minute', hour: 'hour', day: 'day' };
const PAGE = 1000; // the API's largest limit
const MAX_PAGES = 5;

const $ = (id) => document.getElementById(id);
const state = {
  win: '1min',
  range: 3600,
  scope: '',
  paused: false,
  key: sessionStorage.getItem(KEY_STORE) || '',
  role: sessionStorage.getItem(ROLE_STORE) || '',
  authRequired: false,
  inflight: null,
  again: false,
  rows: [],
  truncated: false,
  fetchedAt: 0,
  alerts: [],
};

// ---------- formatting ----------
const nf = (d) => new Intl.NumberFormat(undefined, { maximumFractionDigits: d, minimumFractionDigits: d });
const nf0 = nf(0), nf1 = nf(1), nf2 = nf(2);
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });

function fmtCount(v) { return v == null ? '–' : nf0.format(v); }
function fmtRate(v, short) {
  if (v == null || !isFinite(v)) return '–';
  if (short) return compact.format(v);
  return (v < 10 ? nf2 : v < 100 ? nf1 : nf0).format(v);
}
function fmtPct(v, short) {
  if (v == null || !isFinite(v)) return '–';
  if (short) return `${compact.format(v)}%`;
  return `${(v < 10 ? nf2 : nf1).format(v)} %`;
}
function fmtMs(v, short) {
  if (v == null || !isFinite(v)) return '–';
  if (v >= 1000) return short ? `${compact.format(v / 1000)}s` : `${nf2.format(v / 1000)} s`;
  if (short) return `${compact.format(v)}ms`;
  return `${(v < 10 ? nf2 : v < 100 ? nf1 : nf0).format(v)} ms`;
}
function fmtAgo(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function fmtDuration(sec) {
  if (sec == null) return '–';
  if (sec < 60) return `${nf1.format(sec)} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${Math.round(sec % 60)} s`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
  return `${Math.floor(sec / 86400)} d ${Math.floor((sec % 86400) / 3600)} h`;
}
const fmtTime = (iso) => new Date(iso).toLocaleString(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
function setNum(node, value, text) {
  setText(node, text);
  const v = value == null ? '' : String(value);
  if (node.dataset.value !== v) node.dataset.value = v;
}
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}
function badge(kind, text) { return h('span', { class: `badge b-${kind}`, text }); }
const STATUS_MARK = { healthy: '●', degraded: '▲', unhealthy: '✕' };

// ---------- API ----------
class AuthError extends Error {}
class ApiError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(path, { method = 'GET', key = state.key, okStatuses = [] } = {}) {
  const headers = { Accept: 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  let res;
  try {
    res = await fetch(path, { method, headers, cache: 'no-store', credentials: 'omit' });
  } catch {
    throw new ApiError(0, 'API unreachable');
  }
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (res.status === 401) throw new AuthError(body?.error || 'credentials required');
  if (!res.ok && !okStatuses.includes(res.status)) {
    throw new ApiError(res.status, body?.error || `HTTP ${res.status}`);
  }
  return body;
}

function showError(id, err) {
  const p = $(id);
  if (!err) { p.hidden = true; return; }
  setText(p, `Could not load: ${err.message}${err.status ? ` (HTTP ${err.status})` : ''}. Showing the last data received.`);
  p.hidden = false;
}

// ---------- metrics ----------
async function fetchMetrics(win, fromSec) {
  const rows = [];
  let to = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const q = new URLSearchParams({ window: win, from: String(fromSec), limit: String(PAGE) });
    if (to) q.set('to', to);
    const r = await api(`/metrics?${q}`);
    const m = r.metrics || [];
    if (m.length < PAGE) { rows.push(...m); return { rows, truncated: false }; }
    // The last window may be cut by the limit: drop it, continue before it.
    const oldest = m[m.length - 1].timestamp;
    const keep = m.filter((x) => x.timestamp !== oldest);
    if (!keep.length) { rows.push(...m); return { rows, truncated: true }; }
    rows.push(...keep);
    to = oldest;
  }
  return { rows, truncated: true };
}

async function loadMetrics() {
  const win = state.win, range = state.range;
  const now = Date.now();
  const from = Math.floor((now - range * 1000 - WINDOW_MS[win]) / 1000);
  try {
    const { rows, truncated } = await fetchMetrics(win, from);
    if (win !== state.win || range !== state.range) return; // settings changed meanwhile
    state.rows = rows;
    state.truncated = truncated;
    state.fetchedAt = now;
    state.rowsWin = win;
    showError('metrics-error', null);
    renderMetrics();
  } catch (e) {
    if (e instanceof AuthError) throw e;
    showError('metrics-error', e);
    throw e;
  }
}

// points aggregates rows into one point per window start for the scope:
// sums for counts and throughput, error rate from the sums, and for "all
// services" the worst service's percentile (percentiles do not add up; the
// true all-services percentile is never above the worst service's).
function points(rows, scope) {
  const byT = new Map();
  for (const r of rows) {
    if (scope && r.service !== scope) continue;
    const t = Date.parse(r.timestamp);
    let a = byT.get(t);
    if (!a) {
      a = { t, final: true, count: 0, errors: 0, tput: 0, p50: 0, p95: 0, p99: 0, rate: 0, n: 0 };
      byT.set(t, a);
    }
    a.count += r.count;
    a.errors += r.error_count;
    a.tput += r.throughput_per_sec;
    a.p50 = Math.max(a.p50, r.latency_p50_ms);
    a.p95 = Math.max(a.p95, r.latency_p95_ms);
    a.p99 = Math.max(a.p99, r.latency_p99_ms);
    a.rate = r.error_rate;
    a.final = a.final && r.final;
    a.n++;
  }
  return [...byT.values()].sort((x, y) => x.t - y.t).map((a) => ({
    t: a.t,
    final: a.final,
    count: a.count,
    v: {
      tput: a.tput,
      err: a.n === 1 ? a.rate : a.count ? (100 * a.errors) / a.count : 0,
      p50: a.p50, p95: a.p95, p99: a.p99,
    },
  }));
}

let charts;
function initCharts() {
  const c = (n) => `var(${n})`;
  charts = {
    tput: new LineChart($('chart-throughput'), {
      title: 'Events per second', series: [{ key: 'tput', label: 'events/s', color: c('--s1') }], format: fmtRate,
    }),
    err: new LineChart($('chart-errors'), {
      title: 'Error rate', series: [{ key: 'err', label: 'errors %', color: c('--s3') }], format: fmtPct,
    }),
    lat: new LineChart($('chart-latency'), {
      title: 'Latency', format: fmtMs,
      series: [
        { key: 'p50', label: 'p50', color: c('--s1') },
        { key: 'p95', label: 'p95', color: c('--s2') },
        { key: 'p99', label: 'p99', color: c('--s3') },
      ],
    }),
  };
}

function renderMetrics() {
  const win = state.rowsWin || state.win;
  const scope = state.scope;
  const pts = points(state.rows, scope);
  const to = state.fetchedAt || Date.now();
  const from = to - state.range * 1000;
  for (const ch of Object.values(charts)) ch.update(pts, from, to, WINDOW_MS[win]);

  // KPIs: the newest complete window (the open one is still filling up).
  let k = null;
  for (let i = pts.length - 1; i >= 0; i--) if (pts[i].final) { k = pts[i]; break; }
  const partial = !k && pts.length > 0;
  if (!k) k = pts[pts.length - 1];
  const kp = (id, v, f) => setNum(document.querySelector(`[data-testid="${id}"]`), v ?? null, k ? f(v) : '–');
  kp('kpi-throughput', k?.v.tput, fmtRate);
  kp('kpi-error-rate', k?.v.err, fmtPct);
  kp('kpi-p50', k?.v.p50, fmtMs);
  kp('kpi-p95', k?.v.p95, fmtMs);
  kp('kpi-p99', k?.v.p99, fmtMs);
  kp('kpi-count', k?.count, fmtCount);
  setText($('scope-name'), scope || 'all services');
  let sub = `${WINDOW_NAME[win]} windows`;
  if (k) {
    const end = k.t + WINDOW_MS[win];
    sub += ` · figures: ${partial ? 'open' : 'newest complete'} window ${fmtClock(k.t)}–${fmtClock(end)}`;
  }
  if (!scope) sub += ' · latency: worst service';
  setText($('overview-sub'), sub);
  const note = $('metrics-note');
  note.hidden = !state.truncated;
  if (state.truncated) setText(note, `Showing the newest ${nf0.format(state.rows.length)} rows only: choose a shorter range or a longer window to see all of it.`);

  renderServices(win);
}

const serviceRows = new Map();
function renderServices(win) {
  // newest row per service (rows are newest first)
  const latest = new Map();
  for (const r of state.rows) if (!latest.has(r.service)) latest.set(r.service, r);
  const names = [...latest.keys()].sort((a, b) => a.localeCompare(b));
  const tbody = $('services-body');
  for (const [name, tr] of serviceRows) {
    if (!latest.has(name)) { tr.remove(); serviceRows.delete(name); }
  }
  let prev = null;
  for (const name of names) {
    const r = latest.get(name);
    let tr = serviceRows.get(name);
    if (!tr) {
      const btn = h('button', { type: 'button', class: 'link', 'data-testid': 'svc-name', text: name });
      btn.addEventListener('click', () => setScope(state.scope === name ? '' : name));
      tr = h('tr', { 'data-testid': 'service-row' },
        h('th', { scope: 'row' }, btn),
        h('td', { class: 'num', 'data-testid': 'svc-count' }),
        h('td', { class: 'num', 'data-testid': 'svc-throughput' }),
        h('td', { class: 'num', 'data-testid': 'svc-error-rate' }),
        h('td', { class: 'num', 'data-testid': 'svc-p50' }),
        h('td', { class: 'num', 'data-testid': 'svc-p95' }),
        h('td', { class: 'num', 'data-testid': 'svc-p99' }),
        h('td', { class: 'when', 'data-testid': 'svc-window' }));
      tr.dataset.service = name;
      serviceRows.set(name, tr);
    }
    // keep alphabetical order without re-inserting rows that are in place
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
    const c = tr.cells;
    const btn = c[0].firstChild;
    btn.setAttribute('aria-pressed', String(state.scope === name));
    btn.title = state.scope === name ? 'Show all services' : `Show ${name} in the overview`;
    tr.classList.toggle('selected', state.scope === name);
    setNum(c[1], r.count, fmtCount(r.count));
    setNum(c[2], r.throughput_per_sec, fmtRate(r.throughput_per_sec));
    setNum(c[3], r.error_rate, fmtPct(r.error_rate));
    setNum(c[4], r.latency_p50_ms, fmtMs(r.latency_p50_ms));
    setNum(c[5], r.latency_p95_ms, fmtMs(r.latency_p95_ms));
    setNum(c[6], r.latency_p99_ms, fmtMs(r.latency_p99_ms));
    c[3].className = `num${r.error_rate > 20 ? ' bad-num' : r.error_rate > 5 ? ' warn-num' : ''}`;
    c[6].className = `num${r.latency_p99_ms > 1000 ? ' bad-num' : r.latency_p99_ms > 500 ? ' warn-num' : ''}`;
    const when = `${fmtClock(Date.parse(r.timestamp))} ${r.final ? 'final' : 'open'}`;
    if (c[7].dataset.when !== when) {
      c[7].dataset.when = when;
      c[7].dataset.timestamp = r.timestamp;
      c[7].replaceChildren(
        h('time', { datetime: r.timestamp, title: fmtTime(r.timestamp), text: fmtClock(Date.parse(r.timestamp)) }),
        ' ', badge(r.final ? 'final' : 'open', r.final ? 'final' : 'open'));
    }
  }
  tbody.dataset.window = win;
  tbody.dataset.rows = String(names.length);
  $('services-empty').hidden = names.length > 0;
  for (const e of document.querySelectorAll('.win-name')) setText(e, WINDOW_NAME[win]);
  updateScopeOptions(names);
}

function updateScopeOptions(names) {
  const sel = $('scope');
  const have = new Set([...sel.options].map((o) => o.value));
  for (const n of names) {
    if (have.has(n)) continue;
    const o = h('option', { value: n, text: n });
    // insert alphabetically after "All services"
    let before = null;
    for (const x of sel.options) if (x.value && x.value.localeCompare(n) > 0) { before = x; break; }
    sel.insertBefore(o, before);
  }
  if (sel.value !== state.scope) sel.value = state.scope;
}

// ---------- service health ----------
const healthCards = new Map();
async function loadHealthStatus() {
  let r;
  try {
    r = await api('/health-status');
  } catch (e) {
    if (!(e instanceof AuthError)) showError('health-error', e);
    throw e;
  }
  showError('health-error', null);
  const list = $('health-grid');
  const seen = new Set();
  const now = Date.now();
  for (const s of r.services || []) {
    seen.add(s.service);
    let li = healthCards.get(s.service);
    if (!li) {
      li = h('li', { class: 'hcard', 'data-testid': 'health-card' },
        h('div', { class: 'name' }, h('span', { text: s.service }), h('span')),
        h('dl', {},
          h('dt', { text: 'Error rate' }), h('dd', { 'data-testid': 'health-error-rate' }),
          h('dt', { text: 'p99' }), h('dd', { 'data-testid': 'health-p99' }),
          h('dt', { text: 'Events/s' }), h('dd', { 'data-testid': 'health-throughput' }),
          h('dt', { text: 'Last seen' }), h('dd', { 'data-testid': 'health-last-seen' }, h('time'))));
      li.dataset.service = s.service;
      healthCards.set(s.service, li);
    }
    if (li.dataset.status !== s.status) {
      li.dataset.status = s.status;
      li.className = `hcard ${s.status}`;
      const b = badge(s.status, `${STATUS_MARK[s.status] || ''} ${s.status}`.trim());
      b.dataset.testid = 'health-status';
      li.querySelector('.name').lastChild.replaceWith(b);
    }
    const dd = li.querySelectorAll('dd');
    setNum(dd[0], s.error_rate, fmtPct(s.error_rate));
    setNum(dd[1], s.latency_p99_ms, fmtMs(s.latency_p99_ms));
    setNum(dd[2], s.throughput_per_sec, fmtRate(s.throughput_per_sec));
    const t = dd[3].firstChild;
    t.setAttribute('datetime', s.last_seen);
    t.title = fmtTime(s.last_seen);
    setText(t, fmtAgo(now - Date.parse(s.last_seen)));
  }
  for (const [name, li] of healthCards) {
    if (!seen.has(name)) { li.remove(); healthCards.delete(name); }
  }
  const names = [...healthCards.keys()].sort((a, b) => a.localeCompare(b));
  let prev = null;
  for (const n of names) {
    const li = healthCards.get(n);
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
  list.dataset.count = String(names.length);
  $('health-empty').hidden = names.length > 0;
}

// ---------- alerts ----------
const ORDER = { active: 0, acknowledged: 1, resolved: 2 };
async function loadAlerts() {
  let active, recent;
  try {
    [active, recent] = await Promise.all([api('/alerts?status=active&limit=100'), api('/alerts?limit=50')]);
  } catch (e) {
    if (!(e instanceof AuthError)) showError('alerts-error', e);
    throw e;
  }
  showError('alerts-error', null);
  const byId = new Map();
  for (const a of [...(recent.alerts || []), ...(active.alerts || [])]) byId.set(a.id, a);
  let list = [...byId.values()].sort((a, b) =>
    (ORDER[a.status] ?? 3) - (ORDER[b.status] ?? 3) || Date.parse(b.fired_at) - Date.parse(a.fired_at));
  let resolved = 0;
  list = list.filter((a) => a.status !== 'resolved' || ++resolved <= 10);
  state.alerts = list;
  renderAlerts();
}

const alertRows = new Map();
function canAck() { return Boolean(state.key) && state.role !== 'reader'; }

function renderAlerts() {
  const tbody = $('alerts-body');
  const list = state.alerts;
  const nActive = list.filter((a) => a.status === 'active').length;
  const cnt = $('alerts-active-count');
  setText(cnt, String(nActive));
  cnt.classList.toggle('hot', nActive > 0);
  const ids = new Set(list.map((a) => a.id));
  for (const [id, tr] of alertRows) if (!ids.has(id)) { tr.remove(); alertRows.delete(id); }
  const now = Date.now();
  let prev = null;
  for (const a of list) {
    let tr = alertRows.get(a.id);
    if (!tr) {
      tr = h('tr', { 'data-testid': 'alert-row' });
      tr.dataset.alertId = String(a.id);
      alertRows.set(a.id, tr);
    }
    // Rebuild a row only when the alert changed (a rebuild would take the
    // keyboard focus away from its button); the ages update in place.
    const sig = [a.status, a.updated_at, canAck()].join('|');
    if (tr.dataset.sig !== sig) {
      tr.dataset.sig = sig;
      tr.dataset.status = a.status;
      tr.className = a.status === 'resolved' ? 'inactive' : '';
      const detail = [];
      if (!a.message && a.value != null) detail.push(`${a.metric_name} ${nf2.format(a.value)}${a.threshold != null ? ` (threshold ${nf2.format(a.threshold)})` : ''}`);
      if (a.window_start) detail.push(`${a.window} window ${fmtClock(Date.parse(a.window_start))}`);
      if (a.acknowledged_by) detail.push(`acknowledged by ${a.acknowledged_by}`);
      if (a.resolved_at) detail.push(`resolved ${fmtTime(a.resolved_at)}`);
      const statusCell = h('td', { tabindex: '-1' }, badge(a.status, a.status));
      statusCell.firstChild.dataset.testid = 'alert-status';
      const actions = h('td');
      if (a.status === 'active' && canAck()) {
        const b = h('button', { type: 'button', 'data-testid': 'ack-button', text: 'Acknowledge' });
        b.setAttribute('aria-label', `Acknowledge ${a.rule_name} on ${a.service}`);
        b.addEventListener('click', () => acknowledge(a, b));
        actions.appendChild(b);
      }
      tr.replaceChildren(
        statusCell,
        h('td', {}, badge(a.severity, a.severity)),
        h('td', { text: a.service }),
        h('td', { class: 'msg' }, h('div', { class: 'rule', text: a.rule_name }),
          h('div', { class: 'detail', text: [a.message, ...detail].filter(Boolean).join(' · ') })),
        h('td', { class: 'when' }, h('time', { datetime: a.fired_at, title: fmtTime(a.fired_at) })),
        actions);
    }
    setText(tr.querySelector('time'), fmtAgo(now - Date.parse(a.fired_at)));
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  $('alerts-empty').hidden = list.length > 0;
  const hint = $('ack-hint');
  const anyActive = nActive > 0;
  if (anyActive && !state.key) {
    if (!hint.querySelector('button')) {
      const b = h('button', { type: 'button', class: 'link', text: 'Sign in with an admin API key' });
      b.addEventListener('click', () => showLogin('Sign in with an admin API key to acknowledge alerts.', false));
      hint.replaceChildren(b, ' to acknowledge alerts.');
    }
  } else if (anyActive && state.role === 'reader') {
    hint.replaceChildren('Your API key is a reader key: acknowledging alerts needs an admin key.');
  } else {
    hint.replaceChildren();
  }
  hint.hidden = !hint.textContent;
}

async function acknowledge(a, button) {
  button.disabled = true;
  setText(button, 'Acknowledging…');
  try {
    const r = await api(`/alerts/${encodeURIComponent(a.id)}/acknowledge`, { method: 'POST' });
    state.role = 'admin';
    sessionStorage.setItem(ROLE_STORE, 'admin');
    const i = state.alerts.findIndex((x) => x.id === a.id);
    if (i >= 0 && r && r.alert) state.alerts[i] = r.alert;
    renderAlerts();
    announce(`Alert “${a.rule_name}” on ${a.service} acknowledged.`);
    // the button is gone: keep the keyboard focus on the (rebuilt) row
    alertRows.get(a.id)?.cells[0].focus();
    refresh();
  } catch (e) {
    if (e instanceof AuthError) { showLogin('Your API key was not accepted. Sign in again.'); return; }
    if (e.status === 403) {
      state.role = 'reader';
      sessionStorage.setItem(ROLE_STORE, 'reader');
      renderAlerts();
      announce('Acknowledging needs an admin API key.');
      return;
    }
    button.disabled = false;
    setText(button, 'Acknowledge');
    announce(e.status === 409 ? 'That alert is already resolved.' : `Acknowledge failed: ${e.message}`, true);
    if (e.status === 409) refresh();
  }
}

// ---------- pipeline (/health) ----------
const CHECK_LABEL = { database: 'Database', nats: 'NATS', pipeline: 'Freshness' };
async function loadPipeline() {
  let r;
  try {
    r = await api('/health', { okStatuses: [503] });
  } catch (e) {
    if (!(e instanceof AuthError)) showError('pipeline-error', e);
    throw e;
  }
  showError('pipeline-error', null);
  const overall = $('pipeline-overall');
  setText(overall, r.status || 'unknown');
  overall.className = `badge b-${r.status || 'unknown'}`;
  const dl = $('checks');
  const parts = [];
  for (const [name, c] of Object.entries(r.checks || {})) {
    const details = [];
    if (c.latency_ms != null) details.push(`round trip ${fmtMs(c.latency_ms)}`);
    if (c.window) details.push(`${c.window} table`);
    if (c.newest_window) details.push(`newest window ${fmtClock(Date.parse(c.newest_window))}`);
    if (c.age_seconds != null) details.push(`written ${fmtDuration(c.age_seconds)} ago`);
    for (const [k, v] of Object.entries(c)) {
      if (['status', 'error', 'latency_ms', 'window', 'newest_window', 'updated_at', 'age_seconds'].includes(k)) continue;
      if (v !== null && typeof v !== 'object') details.push(`${k.replaceAll('_', ' ')} ${typeof v === 'number' ? nf2.format(v) : v}`);
    }
    if (c.error) details.push(c.error);
    const b = badge(c.status, c.status);
    b.dataset.testid = `check-${name}`;
    parts.push(h('dt', { text: CHECK_LABEL[name] || name }),
      h('dd', {}, b, h('span', { class: 'detail', text: details.join(' · ') })));
  }
  parts.push(...pipelineParts(r.pipeline));
  parts.push(h('dt', { text: 'API' }),
    h('dd', {}, h('span', { class: 'detail', text: `version ${r.version || '?'}${r.environment ? ` (${r.environment})` : ''} · up ${fmtDuration(r.uptime_seconds)}` })));
  // replace only when something changed (the uptime changes every time,
  // but swapping a few <dd> in one task does not flicker)
  dl.replaceChildren(...parts);
  setText($('version'), `StackLens ${r.version || ''}`.trim());
}

// pipelineParts renders /health's pipeline object: consumer lag per stage
// and dead letters (sampled by the API from JetStream every few seconds).
function pipelineParts(p) {
  if (!p || p.status === 'disabled') {
    return [h('dt', { text: 'Lag, dead letters' }),
      h('dd', { 'data-testid': 'pipeline-lag-disabled' }, h('span', { class: 'detail', text: 'not sampled by this API (no NATS connection)' }))];
  }
  const parts = [];
  const sampled = p.sampled_at ? `sampled ${fmtAgo(Date.now() - Date.parse(p.sampled_at))}` : 'not sampled yet';
  if (p.status !== 'ok') {
    const b = badge('unknown', p.status);
    b.dataset.testid = 'pipeline-sample';
    parts.push(h('dt', { text: 'Lag sample' }), h('dd', {}, b, h('span', { class: 'detail', text: [sampled, p.error].filter(Boolean).join(' · ') })));
  }
  const pr = p.processor;
  if (pr) {
    const details = [`${fmtCount(pr.pending)} events pending`, `oldest ${fmtDuration(pr.max_lag_seconds)}`];
    if (pr.unconsumed > 0) details.push(`${pr.unconsumed} of ${pr.shards} shards not consumed`);
    else details.push(`${pr.shards} shards consumed`);
    const behind = (pr.shard_lags || []).filter((s) => !s.consumed || s.lag_seconds > 0)
      .map((s) => `shard ${s.shard}: ${s.consumed ? `${fmtCount(s.pending)} pending` : 'not consumed'}, ${s.lag_seconds > 0 ? `oldest ${fmtDuration(s.lag_seconds)}` : 'nothing waiting'}`);
    const lagging = pr.unconsumed > 0 || pr.max_lag_seconds >= 60;
    const b = badge(lagging ? 'degraded' : 'ok', lagging ? 'lagging' : 'ok');
    parts.push(h('dt', { text: 'Processor lag' }),
      h('dd', { 'data-testid': 'pipeline-processor-lag', 'data-pending': pr.pending, 'data-max-lag': pr.max_lag_seconds, 'data-unconsumed': pr.unconsumed },
        b, h('span', { class: 'detail', text: details.join(' · ') }),
        ...behind.map((t) => h('span', { class: 'detail', 'data-testid': 'pipeline-shard-behind', text: t }))));
  }
  const projections = p.projections || [];
  parts.push(h('dt', { text: 'Projections lag' }),
    h('dd', { 'data-testid': 'pipeline-projections' },
      ...(projections.length === 0 ? [h('span', { class: 'detail', text: 'no consumers yet' })] : projections.map((c) =>
        h('span', { class: 'detail', 'data-testid': 'pipeline-projection', 'data-consumer': c.consumer, 'data-pending': c.pending },
          `${c.consumer.replace(/^stacklens_projections_/, '')}: ${fmtCount(c.pending + c.ack_pending)} pending${c.lag_seconds > 0 ? `, ${fmtDuration(c.lag_seconds)}` : ''}`)))));
  const dl = p.dead_letters;
  if (dl) {
    const span = dl.last_minute_seconds >= 59.5 ? 'last minute' : `last ${fmtDuration(dl.last_minute_seconds)}`;
    const b = badge(dl.last_minute > 0 ? 'degraded' : 'ok', `${fmtCount(dl.last_minute)} / ${span}`);
    parts.push(h('dt', { text: 'Dead letters' }),
      h('dd', { 'data-testid': 'pipeline-dlq', 'data-total': dl.total, 'data-last-minute': dl.last_minute },
        b, h('span', { class: 'detail', text: `${fmtCount(dl.total)} kept` }),
        ...(dl.reasons || []).map((x) => h('span', {
          class: 'detail', 'data-testid': 'dlq-reason', 'data-reason': `${x.stage}.${x.reason}`, 'data-total': x.total, 'data-last-minute': x.last_minute,
        }, `${x.stage} ${x.reason.replaceAll('_', ' ')}: ${fmtCount(x.total)}${x.last_minute > 0 ? ` (+${fmtCount(x.last_minute)})` : ''}`))));
  }
  if (p.status === 'ok') parts.push(h('dt', { text: 'Lag sample' }), h('dd', {}, h('span', { class: 'detail', text: sampled })));
  return parts;
}

// ---------- SLOs (/slos, slo.js) ----------
const slos = new SLOPanel({
  api, isAuthError: (e) => e instanceof AuthError, showError, h, setText, setNum, badge, fmtDuration, fmtAgo, fmtTime,
});

// ---------- refresh loop ----------
function announce(text, bad = false) {
  const s = $('status');
  setText(s, text);
  s.classList.toggle('bad', bad);
  state.announced = Date.now();
}

function refresh() {
  if (state.authRequired) return Promise.resolve();
  if (state.inflight) { state.again = true; return state.inflight; }
  state.inflight = (async () => {
    const results = await Promise.allSettled([loadMetrics(), loadHealthStatus(), loadAlerts(), loadPipeline(), slos.load()]);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
    const auth = failed.find((e) => e instanceof AuthError);
    if (auth) {
      showLogin(state.key ? 'Your API key was not accepted. Sign in again.' : 'This API needs an API key.');
    } else if (Date.now() - (state.announced || 0) > 4000 || !failed.length) {
      const t = new Date().toLocaleTimeString();
      if (failed.length) announce(`Update failed at ${t}: ${failed[0].message}`, true);
      else {
        const s = $('status');
        setText(s, state.paused ? `Paused · updated ${t}` : `Live · updated ${t}`);
        s.classList.remove('bad');
      }
    }
    document.body.dataset.loaded = 'true';
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  })().finally(() => {
    state.inflight = null;
    if (state.again) { state.again = false; refresh(); }
  });
  return state.inflight;
}

// ---------- auth UI ----------
function showLogin(reason, required = true) {
  state.authRequired = required || state.authRequired;
  setText($('login-reason'), reason);
  $('login-error').hidden = true;
  $('login').hidden = false;
  $('main').hidden = state.authRequired;
  $('login-cancel').hidden = state.authRequired;
  $('controls').hidden = state.authRequired;
  if (state.authRequired) {
    $('signin').hidden = true;
    setText($('status'), 'Sign-in required');
  }
  $('apikey').value = '';
  $('apikey').focus();
}

async function submitLogin(ev) {
  ev.preventDefault();
  const key = $('apikey').value.trim();
  const err = $('login-error');
  if (!key) return;
  const submit = ev.submitter || ev.target.querySelector('[type=submit]');
  submit.disabled = true;
  try {
    await api('/health-status', { key });
  } catch (e) {
    setText(err, e instanceof AuthError ? 'That API key was not accepted.' : `Could not check the key: ${e.message}`);
    err.hidden = false;
    submit.disabled = false;
    $('apikey').focus();
    return;
  }
  submit.disabled = false;
  state.key = key;
  state.role = '';
  sessionStorage.setItem(KEY_STORE, key);
  sessionStorage.removeItem(ROLE_STORE);
  state.authRequired = false;
  $('login').hidden = true;
  $('main').hidden = false;
  $('controls').hidden = false;
  updateSession();
  renderAlerts();
  $('main').focus({ preventScroll: true });
  refresh();
}

function signOut() {
  state.key = '';
  state.role = '';
  sessionStorage.removeItem(KEY_STORE);
  sessionStorage.removeItem(ROLE_STORE);
  updateSession();
  renderAlerts();
  refresh();
}

function updateSession() {
  $('signin').hidden = Boolean(state.key);
  $('signout').hidden = !state.key;
}

// ---------- settings ----------
function saveHash() {
  const q = new URLSearchParams({ window: state.win, range: String(state.range) });
  if (state.scope) q.set('service', state.scope);
  history.replaceState(null, '', `#${q}`);
}

function loadHash() {
  const q = new URLSearchParams(location.hash.slice(1));
  if (WINDOW_MS[q.get('window')]) state.win = q.get('window');
  state.range = DEFAULT_RANGE[state.win];
  const r = Number(q.get('range'));
  if ([...$('range').options].some((o) => Number(o.value) === r)) state.range = r;
  state.scope = q.get('service') || '';
  $('window').value = state.win;
  $('range').value = String(state.range);
  if (state.scope) $('scope').append(h('option', { value: state.scope, text: state.scope }));
  $('scope').value = state.scope;
}

function setScope(s) {
  state.scope = s;
  $('scope').value = s;
  saveHash();
  renderMetrics();
}

// loadWindows fills the window selector with the configured windows. The
// default range of a window is the shortest offered range that shows about
// 60 of its windows (at most the longest range).
async function loadWindows() {
  let list;
  try {
    const res = await fetch('/dashboard/windows.json', { cache: 'no-store', credentials: 'omit' });
    list = (await res.json()).windows;
  } catch { return; } // keep the defaults in the page
  if (!Array.isArray(list) || list.length === 0) return;
  const ranges = [...$('range').options].map((o) => Number(o.value)).sort((a, b) => a - b);
  const sel = $('window');
  sel.replaceChildren();
  for (const k of Object.keys(WINDOW_MS)) { delete WINDOW_MS[k]; delete WINDOW_NAME[k]; delete DEFAULT_RANGE[k]; }
  for (const w of list) {
    const m = /^(\d+)(min|hour|day)$/.exec(w.name);
    if (!m || !(w.seconds > 0)) continue;
    const n = Number(m[1]), word = UNIT_WORD[m[2]];
    WINDOW_MS[w.name] = w.seconds * 1000;
    WINDOW_NAME[w.name] = `${n}-${word}`;
    DEFAULT_RANGE[w.name] = ranges.find((r) => r >= 60 * w.seconds) ?? ranges[ranges.length - 1];
    sel.append(h('option', { value: w.name, text: `${n} ${word}${n === 1 ? '' : 's'}` }));
  }
  if (!WINDOW_MS[state.win]) state.win = sel.options[0].value;
}

async function init() {
  await loadWindows();
  loadHash();
  initCharts();
  updateSession();
  $('controls').addEventListener('submit', (e) => e.preventDefault());
  $('window').addEventListener('change', (e) => {
    state.win = e.target.value;
    state.range = DEFAULT_RANGE[state.win];
    $('range').value = String(state.range);
    saveHash();
    refresh();
  });
  $('range').addEventListener('change', (e) => {
    state.range = Number(e.target.value);
    saveHash();
    refresh();
  });
  $('scope').addEventListener('change', (e) => setScope(e.target.value));
  $('pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('pause').setAttribute('aria-pressed', String(state.paused));
    setText($('pause'), state.paused ? 'Resume' : 'Pause');
    if (!state.paused) refresh();
    else setText($('status'), 'Paused');
  });
  $('signin').addEventListener('click', () => showLogin('Sign in with an API key (an admin key can acknowledge alerts).', false));
  $('signout').addEventListener('click', signOut);
  $('login-form').addEventListener('submit', submitLogin);
  $('login-cancel').addEventListener('click', () => { $('login').hidden = true; $('signin').focus(); });
  setInterval(() => { if (!state.paused && !document.hidden) refresh(); }, REFRESH_MS);
  document.addEventListener('visibilitychange', () => { if (!document.hidden && !state.paused) refresh(); });
  refresh();
}

init();
