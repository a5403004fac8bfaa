// A small SVG line chart: time on x, one or more series on y. The SVG is
// built once; update() changes paths and axes in place, so refreshing never
// flickers. Hover or focus the chart and use ←/→ to read values.

const NS = 'http://www.w3.org/2000/svg';
const M = { top: 8, right: 12, bottom: 22, left: 52 };
let uid = 0;

function el(name, attrs = {}, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function html(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// niceStep returns a round step so that [0, max] has about n ticks.
function niceStep(max, n) {
  const raw = max / n;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

const MIN = 60e3, HOUR = 3600e3, DAY = 86400e3;
const TIME_STEPS = [MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY];

function timeTicks(from, to, maxTicks) {
  const span = to - from;
  const step = TIME_STEPS.find((s) => span / s <= maxTicks) || 7 * DAY;
  // align to local midnight/hour boundaries
  const off = new Date(from).getTimezoneOffset() * MIN;
  let t = Math.ceil((from - off) / step) * step + off;
  const out = [];
  for (; t <= to; t += step) out.push(t);
  return { ticks: out, step };
}

const pad = (n) => String(n).padStart(2, '0');
export function fmtClock(t) {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
function fmtTick(t, step) {
  const d = new Date(t);
  if (step >= DAY || (d.getHours() === 0 && d.getMinutes() === 0 && step >= HOUR)) {
    return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  }
  return fmtClock(t);
}

export class LineChart {
  // opts: {title, series: [{key, label, color}], format: v => string, note}
  constructor(figure, opts) {
    this.fig = figure;
    this.opts = opts;
    this.points = [];
    this.cursor = -1;
    const id = `chart${++uid}`;

    const cap = html('figcaption');
    const title = html('span', 'title', opts.title);
    title.id = `${id}-title`;
    cap.appendChild(title);
    const legend = html('ul', 'legend');
    for (const s of opts.series) {
      const li = html('li');
      const sw = html('span', 'swatch');
      sw.style.background = s.color;
      li.append(sw, document.createTextNode(s.label));
      legend.appendChild(li);
    }
    cap.appendChild(legend);
    figure.appendChild(cap);

    this.svg = el('svg', { role: 'img', tabindex: '0', 'aria-labelledby': `${id}-title ${id}-desc` }, figure);
    this.desc = el('desc', { id: `${id}-desc` }, this.svg);
    this.gGrid = el('g', { class: 'axis' }, this.svg);
    // lines are clipped to the plot area: the oldest window may start
    // before the range does
    const clip = el('clipPath', { id: `${id}-clip` }, el('defs', {}, this.svg));
    this.clipRect = el('rect', {}, clip);
    this.gLines = el('g', { 'clip-path': `url(#${id}-clip)` }, this.svg);
    // colours are CSS values (var(--s1)): set through CSSOM, so they follow
    // the colour scheme and need no inline style attribute (CSP)
    const paint = (e, prop, color) => { e.style[prop] = color; return e; };
    this.paths = opts.series.map((s) => ({
      closed: paint(el('path', { class: 'line' }, this.gLines), 'stroke', s.color),
      open: paint(el('path', { class: 'line open' }, this.gLines), 'stroke', s.color),
    }));
    this.cursorLine = el('line', { class: 'cursor', visibility: 'hidden' }, this.svg);
    this.dots = opts.series.map((s) => paint(el('circle', { class: 'dot', r: 3.5, visibility: 'hidden' }, this.svg), 'fill', s.color));
    this.noData = el('text', { class: 'nodata', 'text-anchor': 'middle', visibility: 'hidden' }, this.svg);
    this.noData.textContent = 'No data in this range';
    this.tip = html('div', 'tooltip');
    this.tip.hidden = true;
    this.tip.setAttribute('aria-hidden', 'true');
    figure.appendChild(this.tip);

    this.svg.addEventListener('pointermove', (e) => this.hover(e));
    this.svg.addEventListener('pointerleave', () => this.setCursor(-1));
    this.svg.addEventListener('blur', () => this.setCursor(-1));
    this.svg.addEventListener('keydown', (e) => this.key(e));
    new ResizeObserver(() => this.render()).observe(this.svg);
  }

  // update sets the data: points [{t (ms), final (bool), v: {key: number}}]
  // sorted by t, the visible range [from, to] in ms and the window length
  // (a gap longer than 1.5 windows breaks the line).
  update(points, from, to, windowMs) {
    this.points = points;
    this.from = from;
    this.to = to;
    this.windowMs = windowMs;
    if (this.cursor >= points.length) this.cursor = -1;
    this.render();
  }

  render() {
    const w = this.svg.clientWidth;
    const h = this.svg.clientHeight;
    if (!w || !h || this.from === undefined) return;
    this.w = w;
    this.h = h;
    const { series, format } = this.opts;
    const pts = this.points;
    // the y axis starts at 0, or lower for negative values (an overspent
    // error budget)
    let max = 0, min = 0;
    for (const p of pts) {
      for (const s of series) {
        const v = p.v[s.key];
        if (v == null || !isFinite(v)) continue;
        max = Math.max(max, v);
        min = Math.min(min, v);
      }
    }
    if (max - min <= 0) max = 1;
    const step = niceStep(max - min, 4);
    const top = Math.ceil(max / step) * step;
    const bottom = Math.floor(min / step) * step;
    this.yTop = top;
    const pw = w - M.left - M.right, ph = h - M.top - M.bottom;
    const x = (t) => M.left + ((t - this.from) / (this.to - this.from)) * pw;
    const y = (v) => M.top + ph - ((v - bottom) / (top - bottom)) * ph;
    this.x = x;
    this.y = y;
    this.clipRect.setAttribute('x', M.left);
    this.clipRect.setAttribute('y', 0);
    this.clipRect.setAttribute('width', pw + M.right);
    this.clipRect.setAttribute('height', h);

    // axes and grid: rebuilt in one synchronous pass (no flicker)
    const g = this.gGrid;
    g.replaceChildren();
    for (let v = bottom; v <= top + step / 2; v += step) {
      el('line', { class: 'gridline', x1: M.left, x2: w - M.right, y1: y(v), y2: y(v) }, g);
      const t = el('text', { x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, g);
      t.textContent = format(v, true);
    }
    const { ticks, step: tstep } = timeTicks(this.from, this.to, Math.max(2, Math.floor(pw / 80)));
    for (const tk of ticks) {
      const t = el('text', { x: x(tk), y: h - 6, 'text-anchor': 'middle' }, g);
      t.textContent = fmtTick(tk, tstep);
    }

    // lines: final windows solid, the open (still filling) window dotted
    const gap = (this.windowMs || MIN) * 1.5;
    series.forEach((s, i) => {
      let dClosed = '', dOpen = '', prev = null;
      for (const p of pts) {
        const v = p.v[s.key];
        if (v === undefined || v === null || !isFinite(v)) { prev = null; continue; }
        const xy = `${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
        const joined = prev && p.t - prev.t <= gap;
        if (p.final) {
          dClosed += (joined ? 'L' : 'M') + xy;
        } else {
          dOpen += (joined ? `M${prev.xy}L` : 'M') + xy;
        }
        prev = { t: p.t, xy };
      }
      this.paths[i].closed.setAttribute('d', dClosed || 'M0,0');
      this.paths[i].open.setAttribute('d', dOpen || 'M0,0');
      this.paths[i].closed.setAttribute('visibility', dClosed ? 'visible' : 'hidden');
      this.paths[i].open.setAttribute('visibility', dOpen ? 'visible' : 'hidden');
    });
    this.noData.setAttribute('x', M.left + pw / 2);
    this.noData.setAttribute('y', M.top + ph / 2);
    this.noData.setAttribute('visibility', pts.length ? 'hidden' : 'visible');

    // text alternative: the newest values
    const last = pts[pts.length - 1];
    this.desc.textContent = last
      ? `Newest window ${fmtClock(last.t)}: ` + series.map((s) => `${s.label} ${format(last.v[s.key])}`).join(', ')
      : 'No data in this range';
    this.setCursor(this.cursor);
  }

  hover(e) {
    if (!this.points.length || !this.x) return;
    const r = this.svg.getBoundingClientRect();
    const px = e.clientX - r.left;
    let best = -1, bd = Infinity;
    this.points.forEach((p, i) => {
      const d = Math.abs(this.x(p.t) - px);
      if (d < bd) { bd = d; best = i; }
    });
    this.setCursor(best);
  }

  key(e) {
    const n = this.points.length;
    if (!n) return;
    let c = this.cursor;
    if (e.key === 'ArrowLeft') c = c < 0 ? n - 1 : Math.max(0, c - 1);
    else if (e.key === 'ArrowRight') c = c < 0 ? n - 1 : Math.min(n - 1, c + 1);
    else if (e.key === 'Home') c = 0;
    else if (e.key === 'End') c = n - 1;
    else if (e.key === 'Escape') c = -1;
    else return;
    e.preventDefault();
    this.setCursor(c);
  }

  setCursor(i) {
    this.cursor = i;
    const p = this.points[i];
    if (!p || !this.x) {
      this.cursorLine.setAttribute('visibility', 'hidden');
      this.dots.forEach((d) => d.setAttribute('visibility', 'hidden'));
      this.tip.hidden = true;
      return;
    }
    const cx = this.x(p.t);
    this.cursorLine.setAttribute('x1', cx);
    this.cursorLine.setAttribute('x2', cx);
    this.cursorLine.setAttribute('y1', M.top);
    this.cursorLine.setAttribute('y2', this.h - M.bottom);
    this.cursorLine.setAttribute('visibility', 'visible');
    const { series, format } = this.opts;
    const tip = this.tip;
    tip.replaceChildren(html('div', 't', new Date(p.t).toLocaleString(undefined, {
      month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    }) + (p.final ? '' : ' (open)')));
    series.forEach((s, k) => {
      const v = p.v[s.key];
      const d = this.dots[k];
      if (v === undefined || v === null) { d.setAttribute('visibility', 'hidden'); return; }
      d.setAttribute('cx', cx);
      d.setAttribute('cy', this.y(v));
      d.setAttribute('visibility', 'visible');
      tip.appendChild(html('div', '', `${s.label}: ${format(v)}`));
    });
    tip.hidden = false;
    const left = cx + 12 + 180 > this.w ? cx - 12 - tip.offsetWidth : cx + 12;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${M.top + 24}px`;
  }
}
