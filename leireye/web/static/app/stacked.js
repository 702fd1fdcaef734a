// A stacked area chart of traffic by application over time (uPlot), for the protocol view and
// the host page.
//
// `set(points, {fromMs, toMs, stepS})` takes [{t (ms), key, value}]; the MAX_KEYS largest keys
// get their own layer (coloured as the packet table colours that protocol), the rest are one
// "other" layer. Layers are drawn as cumulative sums, the largest total at the bottom; the tip
// and the legend show each layer's own value. Missing intervals count as 0.

import { h } from './dom.js';
import { protocolClass } from './table.js';

const MAX_KEYS = 8;
const FALLBACK = ['#6c9eff', '#57c78a', '#e5a84b', '#c38cf0', '#3fc1d6', '#9fd46a', '#f08cc0', '#e08f62'];
const FONT = '11px ui-monospace, "DejaVu Sans Mono", monospace';

function cssVar(name, el = document.documentElement) {
  return getComputedStyle(el).getPropertyValue(name).trim();
}

// The colour the console gives a protocol label (--pc of its .p-* class), or a fallback.
function colourOf(key, index, probe) {
  probe.className = protocolClass(key);
  const own = cssVar('--pc', probe);
  return own || FALLBACK[index % FALLBACK.length];
}

function timeLabel(seconds, spanS) {
  const d = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, '0');
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  return spanS > 86400 ? `${two(d.getDate())}/${two(d.getMonth() + 1)} ${hm}` : hm;
}

// Points -> {xs (s), keys (largest first), values: key -> [per x]}; pure, for tests too.
export function stack(points, { fromMs, toMs, stepS }, maxKeys = MAX_KEYS) {
  const step = stepS;
  const first = Math.floor(fromMs / 1000 / step) * step;
  const last = Math.floor(toMs / 1000 / step) * step;
  const xs = [];
  for (let t = first; t <= last; t += step) xs.push(t);
  const totals = new Map();
  for (const p of points) totals.set(p.key, (totals.get(p.key) ?? 0) + p.value);
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([key]) => key);
  const keys = ranked.length > maxKeys ? [...ranked.slice(0, maxKeys - 1), 'other'] : ranked;
  const own = new Set(keys);
  const values = new Map(keys.map((key) => [key, new Array(xs.length).fill(0)]));
  for (const p of points) {
    const i = Math.round((Math.floor(p.t / 1000 / step) * step - first) / step);
    if (i < 0 || i >= xs.length) continue;
    values.get(own.has(p.key) ? p.key : 'other')[i] += p.value;
  }
  return { xs, keys, values, totals: keys.map((key) => values.get(key).reduce((a, b) => a + b, 0)) };
}

export class StackedChart {
  #el;
  #legend;
  #tip;
  #probe;
  format;
  #plot = null;
  #data = { xs: [], keys: [], values: new Map(), totals: [] };
  #spanS = 3600;

  constructor(el, legend, format) {
    this.#el = el;
    this.#legend = legend;
    this.format = format;
    this.#probe = h('span', { hidden: true });
    el.append(this.#probe);
    this.#tip = h('div', { class: 'chart-tip', hidden: true });
    new ResizeObserver(() => {
      if (this.#el.clientWidth > 0) this.#plot?.setSize(this.#size());
    }).observe(el);
  }

  set(points, range) {
    this.#data = stack(points, range);
    this.#spanS = (range.toMs - range.fromMs) / 1000;
    this.#el.dataset.keys = this.#data.keys.join(',');
    this.#el.dataset.points = String(points.length);
    this.#build();
  }

  restyle() {
    this.#build();
  }

  #size() {
    return { width: Math.max(200, this.#el.clientWidth), height: Math.max(120, this.#el.clientHeight) };
  }

  #build() {
    this.#plot?.destroy();
    this.#plot = null;
    const { xs, keys, values, totals } = this.#data;
    const colours = keys.map((key, i) => colourOf(key, i, this.#probe));
    this.#legend.replaceChildren(...keys.map((key, i) => h('span', { class: 'legend-item', 'data-key': key },
      h('span', { class: 'swatch', style: null, dataset: { colour: colours[i] } }), key,
      h('span', { class: 'muted' }, ` ${this.format(totals[i])}`))));
    for (const swatch of this.#legend.querySelectorAll('.swatch')) {
      swatch.style.background = swatch.dataset.colour;
    }
    if (typeof window.uPlot !== 'function') return;
    // Cumulative layers, the largest (all keys) first so that the smaller ones paint over it.
    const sums = [];
    let running = new Array(xs.length).fill(0);
    for (const key of keys) {
      running = running.map((v, i) => v + values.get(key)[i]);
      sums.push(running);
    }
    const order = keys.map((_, i) => keys.length - 1 - i);
    const axis = cssVar('--chart-axis') || '#7f8c99';
    const grid = { stroke: cssVar('--chart-grid') || 'rgba(148, 163, 184, 0.1)', width: 1 };
    const format = this.format;
    const spanS = this.#spanS;
    const options = {
      ...this.#size(),
      legend: { show: false },
      cursor: { y: false, points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, (max ?? 0) * 1.1)] } },
      axes: [
        { stroke: axis, font: FONT, grid, size: 24, space: 80, values: (u, splits) => splits.map((t) => timeLabel(t, spanS)) },
        { stroke: axis, font: FONT, grid, ticks: { show: false }, size: 70, values: (u, vs) => vs.map((v) => format(v)) },
      ],
      series: [{}, ...order.map((k) => ({
        label: keys[k], stroke: colours[k], fill: `${colours[k]}cc`, width: 1, points: { show: false },
      }))],
      hooks: { setCursor: [(u) => this.#showCursor(u)] },
    };
    this.#plot = new window.uPlot(options, [xs, ...order.map((k) => sums[k])], this.#el);
    this.#plot.over.append(this.#tip);
  }

  #showCursor(u) {
    const i = u.cursor.idx;
    const { xs, keys, values } = this.#data;
    if (i === null || i === undefined || xs[i] === undefined) {
      this.#tip.hidden = true;
      return;
    }
    const when = new Date(xs[i] * 1000).toLocaleString([], { hour12: false });
    const lines = keys.filter((key) => values.get(key)[i] > 0)
      .map((key) => `${key} ${this.format(values.get(key)[i])}`);
    this.#tip.textContent = [when, ...lines].join(' · ');
    this.#tip.hidden = false;
    const left = u.cursor.left ?? 0;
    const width = this.#tip.offsetWidth;
    const room = u.over.clientWidth;
    this.#tip.style.left = `${Math.max(0, Math.min(room - width, left + 8))}px`;
  }
}
