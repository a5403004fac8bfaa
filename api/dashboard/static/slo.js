// The SLOs panel: one card per SLO of GET /slos (compliance, error budget,
// burn rates, time to exhaustion, firing burn-rate alerts) with a
// burn-down chart from GET /slos/{id}/history. Cards are keyed by SLO id
// and updated in place, like the other panels (docs/dashboard.md).
import { LineChart } from './chart.js';

// The burn-rate windows every card shows (the default policy's long
// windows and the short ones that matter most); windows of a custom policy
// are added after them.
const BURN_WINDOWS = ['5m', '30m', '1h', '6h', '1d', '3d'];
// History points are hourly: reading them on every 5-second refresh would
// only repeat the same points.
const HISTORY_MS = 60e3;

const nfMax = (d) => new Intl.NumberFormat(undefined, { maximumFractionDigits: d });
const nfFix = (d) => new Intl.NumberFormat(undefined, { minimumFractionDigits: d, maximumFractionDigits: d });
const nfTarget = nfMax(4), nfAxis = nfMax(1), nfComp = nfFix(3), nfRatio = nfFix(1), nf0 = nfFix(0), nf1 = nfFix(1), nf2 = nfFix(2);

const UNIT = { m: 60, h: 3600, d: 86400, w: 604800 };
function durSeconds(s) {
  const m = /^(\d+)([mhdw])$/.exec(s || '');
  return m ? Number(m[1]) * UNIT[m[2]] : Infinity;
}
export function fmtBurn(v) {
  if (v == null || !isFinite(v)) return '–';
  return `${(v < 10 ? nf2 : nf1).format(v)}×`;
}
function fmtCompliance(v) { return v == null ? '–' : `${nfComp.format(v)} %`; }
function fmtRatio(v) { return v == null ? '–' : `${nfRatio.format(100 * v)} %`; }
function fmtEvents(v) { return nf0.format(Math.round(v)); }

// objectiveText is the objective in words: "availability" or
// "latency ≤ 300 ms".
function objectiveText(s) {
  if (s.objective === 'latency') return `latency ≤ ${nfTarget.format(s.latency_threshold_ms)} ms`;
  return s.objective;
}

// burnState is what the policy says of a burn rate over window w: the
// entries using w whose threshold it reaches ({hot: 'page'|'ticket'|'',
// entries}).
function burnState(policy, w, rate) {
  const entries = policy.filter((a) => a.long === w || a.short === w);
  const reached = rate == null ? [] : entries.filter((a) => rate >= a.burn_rate);
  const hot = reached.some((a) => a.severity === 'page') ? 'page' : reached.length ? 'ticket' : '';
  return { entries, reached, hot };
}

export class SLOPanel {
  // ui: helpers of app.js — api, isAuthError, showError, h, setText,
  // setNum, badge, fmtDuration, fmtAgo, fmtTime.
  constructor(ui) {
    this.ui = ui;
    this.cards = new Map(); // id -> card
    this.history = new Map(); // id -> {at, sig, body}
  }

  async load() {
    const { api, isAuthError, showError } = this.ui;
    let list;
    try {
      list = (await api('/slos')).slos || [];
      await Promise.all(list.map((s) => this.loadHistory(s)));
    } catch (e) {
      if (!isAuthError(e)) showError('slos-error', e);
      throw e;
    }
    showError('slos-error', null);
    this.render(list);
  }

  // loadHistory reads an SLO's burn-down over its period, at most once a
  // minute, and again at once when its definition changes.
  async loadHistory(s) {
    const sig = [s.objective, s.latency_threshold_ms, s.target, s.period, s.service].join('|');
    const have = this.history.get(s.id);
    if (have && have.sig === sig && Date.now() - have.at < HISTORY_MS) return;
    const body = await this.ui.api(`/slos/${encodeURIComponent(s.id)}/history`);
    this.history.set(s.id, { at: Date.now(), sig, body });
  }

  render(list) {
    const root = document.getElementById('slo-list');
    const ids = new Set(list.map((s) => s.id));
    for (const [id, c] of this.cards) {
      if (!ids.has(id)) { c.el.remove(); this.cards.delete(id); this.history.delete(id); }
    }
    let prev = null;
    for (const s of list) {
      let c = this.cards.get(s.id);
      if (!c) { c = this.build(s); this.cards.set(s.id, c); }
      const want = prev ? prev.nextSibling : root.firstChild;
      if (want !== c.el) root.insertBefore(c.el, want);
      this.update(c, s);
      prev = c.el;
    }
    root.dataset.count = String(list.length);
    document.getElementById('slos-empty').hidden = list.length > 0;
  }

  build(s) {
    const { h } = this.ui;
    const id = `slo-${s.id}`;
    const c = {};
    c.name = h('h3', { id: `${id}-name`, 'data-testid': 'slo-name' });
    c.state = h('span', { class: 'badge', 'data-testid': 'slo-state' });
    c.flags = h('span', { class: 'slo-flags' });
    c.def = h('p', { class: 'slo-def', 'data-testid': 'slo-def' });
    c.invalid = h('p', { class: 'error', 'data-testid': 'slo-invalid' });
    c.invalid.hidden = true;

    c.compliance = h('dd', { class: 'fig', 'data-testid': 'slo-compliance' });
    c.counts = h('dd', { class: 'detail', 'data-testid': 'slo-counts' });
    c.budget = h('dd', { class: 'fig', 'data-testid': 'slo-budget' });
    c.fill = h('span', { class: 'fill' });
    c.bar = h('div', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'data-testid': 'slo-budget-bar' }, c.fill);
    c.bar.setAttribute('aria-label', 'Error budget left');
    c.budgetEvents = h('dd', { class: 'detail', 'data-testid': 'slo-budget-events' });
    c.tte = h('dd', { class: 'fig', 'data-testid': 'slo-tte' });
    c.tteNote = h('dd', { class: 'detail' });
    const fig = (label, ...dds) => h('div', { class: 'slo-fig' }, h('dt', { text: label }), ...dds);
    const figs = h('dl', { class: 'slo-figs' },
      fig('Compliance', c.compliance, c.counts),
      fig('Error budget left', c.budget, h('dd', {}, c.bar), c.budgetEvents),
      fig('Time to exhaustion', c.tte, c.tteNote));

    c.burnHead = h('tr');
    c.burnRow = h('tr', { 'data-testid': 'slo-burn-rates' });
    c.burnAt = h('tr', { class: 'at' });
    c.burn = h('table', { class: 'burn' },
      h('caption', { class: 'visually-hidden', text: 'Burn rates by window' }),
      h('thead', {}, c.burnHead), h('tbody', {}, c.burnRow, c.burnAt));

    c.alerts = h('ul', { class: 'slo-alerts', 'data-testid': 'slo-alerts' });
    c.noAlerts = h('p', { class: 'hint', text: 'No burn-rate alert firing.' });

    c.fig = h('figure', { class: 'chart', 'data-testid': 'slo-chart' });
    c.el = h('article', { class: 'slo-card', 'data-testid': 'slo-card', 'aria-labelledby': `${id}-name` },
      h('div', { class: 'slo-head' }, c.name, c.state, c.flags), c.def, c.invalid, figs,
      h('div', { class: 'table-wrap' }, c.burn),
      h('h4', { text: 'Firing burn-rate alerts' }), c.alerts, c.noAlerts, c.fig);
    c.el.dataset.sloId = String(s.id);
    c.chart = new LineChart(c.fig, {
      title: 'Error budget left over the period',
      series: [{ key: 'budget', label: 'budget left', color: 'var(--s1)' }],
      format: (v, short) => (v == null || !isFinite(v) ? '–' : short ? `${nfAxis.format(v)}%` : `${nfRatio.format(v)} %`),
    });
    return c;
  }

  update(c, s) {
    const { h, setText, setNum, badge, fmtDuration, fmtAgo, fmtTime } = this.ui;
    const b = s.error_budget || {};
    const noData = !(s.total_events > 0);
    const exhausted = !noData && b.remaining_ratio != null && b.remaining_ratio <= 0;
    const state = noData ? 'nodata' : exhausted ? 'exhausted' : 'ok';
    c.el.dataset.state = state;
    setText(c.name, s.name);
    setText(c.state, noData ? 'no data' : exhausted ? 'budget exhausted ✕' : s.compliance >= s.target ? 'meeting target ●' : 'below target ▲');
    c.state.className = `badge b-${noData ? 'unknown' : exhausted ? 'bad' : s.compliance >= s.target ? 'ok' : 'warn'}`;
    const flags = [];
    if (!s.enabled) flags.push(badge('disabled', 'disabled'));
    const firing = s.firing_alerts || [];
    if (firing.length) flags.push(badge('active', `${firing.length} firing`));
    const fsig = `${s.enabled}|${firing.length}`;
    if (c.flags.dataset.sig !== fsig) { c.flags.dataset.sig = fsig; c.flags.replaceChildren(...flags); }

    setText(c.def, [s.service ?? 'all services', objectiveText(s), `target ${nfTarget.format(s.target)} %`, `period ${s.period}`].join(' · '));
    c.def.dataset.service = s.service ?? '';
    setText(c.invalid, s.invalid ? `Not evaluated for alerts: ${s.invalid}` : '');
    c.invalid.hidden = !s.invalid;

    setNum(c.compliance, s.compliance, fmtCompliance(s.compliance));
    const counted = s.counted_from && Date.parse(s.counted_from) > Date.parse(s.period_start) ? ` · counted from ${fmtTime(s.counted_from)}` : '';
    setText(c.counts, noData ? 'no events in the period' : `${fmtEvents(s.good_events)} good of ${fmtEvents(s.total_events)} events${counted}`);

    setNum(c.budget, b.remaining_ratio, exhausted ? `exhausted (${fmtRatio(b.remaining_ratio)})` : fmtRatio(b.remaining_ratio));
    c.budget.classList.toggle('bad-num', exhausted);
    const pct = b.remaining_ratio == null ? 0 : Math.max(0, Math.min(1, b.remaining_ratio)) * 100;
    c.fill.style.width = `${pct}%`; // CSSOM, not a style attribute: the CSP allows it
    c.bar.classList.toggle('exhausted', exhausted);
    c.bar.setAttribute('aria-valuenow', String(Math.round(pct * 10) / 10));
    c.bar.setAttribute('aria-valuetext', noData ? 'no data' : exhausted ? 'exhausted' : `${fmtRatio(b.remaining_ratio)} left`);
    c.budgetEvents.dataset.value = noData ? '' : String(b.remaining_events);
    setText(c.budgetEvents, noData ? 'no budget without events' : b.remaining_events >= 0
      ? `${fmtEvents(b.remaining_events)} of ${fmtEvents(b.total_events)} bad events left`
      : `${fmtEvents(-b.remaining_events)} bad events over a budget of ${fmtEvents(b.total_events)}`);

    const tte = s.time_to_exhaustion_seconds;
    setNum(c.tte, tte, tte == null ? (noData ? '–' : 'not burning') : tte === 0 ? 'exhausted' : fmtDuration(tte));
    c.tte.classList.toggle('bad-num', tte === 0);
    setText(c.tteNote, tte > 0 ? 'at the bad-event rate of the last hour' : '');

    this.updateBurn(c, s);
    this.updateAlerts(c, firing, h, badge, fmtAgo, fmtTime, setText);
    this.updateChart(c, s);
  }

  updateBurn(c, s) {
    const { h, setText, setNum } = this.ui;
    const policy = s.burn_alerts || [];
    const rates = s.burn_rates || {};
    const extra = new Set();
    for (const a of policy) for (const w of [a.long, a.short]) if (!BURN_WINDOWS.includes(w) && w in rates) extra.add(w);
    const wins = [...BURN_WINDOWS, ...[...extra].sort((x, y) => durSeconds(x) - durSeconds(y))];
    const sig = wins.join(',') + '|' + policy.map((a) => `${a.severity}${a.burn_rate}${a.long}${a.short}`).join(',');
    if (c.burn.dataset.sig !== sig) {
      c.burn.dataset.sig = sig;
      c.burnHead.replaceChildren(h('th', { scope: 'col', text: 'Window' }), ...wins.map((w) => h('th', { scope: 'col', class: 'num', text: w })));
      c.burnRow.replaceChildren(h('th', { scope: 'row', text: 'Burn rate' }),
        ...wins.map((w) => h('td', { class: 'num', 'data-testid': 'slo-burn', 'data-window': w })));
      c.burnAt.replaceChildren(h('th', { scope: 'row', text: 'Alert at' }), ...wins.map((w) => {
        const es = burnState(policy, w, null).entries;
        const levels = [...new Set(es.map((a) => a.burn_rate))].sort((x, y) => y - x);
        return h('td', { class: 'num', text: levels.length ? levels.map((v) => `${nfTarget.format(v)}×`).join(' · ') : '–' });
      }));
    }
    [...c.burnRow.cells].slice(1).forEach((td) => {
      const w = td.dataset.window;
      const v = rates[w] ?? null;
      const st = burnState(policy, w, v);
      setNum(td, v, st.hot ? `${fmtBurn(v)} ▲` : fmtBurn(v));
      td.dataset.hot = st.hot;
      td.className = `num${st.hot === 'page' ? ' bad-num' : st.hot === 'ticket' ? ' warn-num' : ''}`;
      const title = st.reached.length
        ? `at or above the ${st.reached.map((a) => `${a.severity} threshold ${fmtBurn(a.burn_rate)} (${a.long} and ${a.short})`).join(' and the ')}`
        : '';
      if (td.title !== title) td.title = title;
      const label = `${w}: ${fmtBurn(v)}${title ? `, ${title}` : ''}`;
      if (td.getAttribute('aria-label') !== label) td.setAttribute('aria-label', label);
    });
  }

  updateAlerts(c, firing, h, badge, fmtAgo, fmtTime, setText) {
    const sig = firing.map((a) => a.id).join(',');
    if (c.alerts.dataset.sig !== sig) {
      c.alerts.dataset.sig = sig;
      c.alerts.replaceChildren(...firing.map((a) => {
        const li = h('li', { 'data-testid': 'slo-alert' });
        li.dataset.alertId = String(a.id);
        li.dataset.severity = a.severity;
        li.append(badge(a.severity, a.severity),
          h('span', { text: ` ${nfTarget.format(a.burn_rate)}× over ${a.long} and ${a.short} · since ` }),
          h('time', { datetime: a.started_at, title: fmtTime(a.started_at) }),
          h('span', { class: 'detail', text: ` · alert ${a.id}` }));
        return li;
      }));
    }
    const now = Date.now();
    for (const li of c.alerts.children) {
      const t = li.querySelector('time');
      setText(t, fmtAgo(now - Date.parse(t.getAttribute('datetime'))));
    }
    c.noAlerts.hidden = firing.length > 0;
  }

  updateChart(c, s) {
    const hist = this.history.get(s.id)?.body;
    if (!hist || c.hist === hist) return; // redraw only on new points
    c.hist = hist;
    // points without events have no budget: left out, the line breaks there
    const pts = (hist.points || []).filter((p) => p.budget_remaining_ratio != null).map((p) => ({
      t: Date.parse(p.time), final: true, v: { budget: 100 * p.budget_remaining_ratio },
    }));
    c.fig.dataset.points = String(pts.length);
    c.chart.update(pts, Date.parse(hist.from), Date.parse(hist.to), (hist.step_seconds || 3600) * 1000);
  }
}
