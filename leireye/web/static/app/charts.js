// Packets/s and bytes/s over the last minutes (uPlot, vendored in /static/vendor/uplot).
//
// History comes from /api/stats/timeline when the console opens; then every `stats` message
// adds its second. Both are keyed by the Unix second, so a live second that the history already
// holds replaces it instead of drawing twice.

import { bytes, compact } from './format.js';

const AXIS = '#7f8c99';
const GRID = 'rgba(148, 163, 184, 0.08)';
const HEIGHT = 78;
const WINDOW_S = 300;
const FONT = '10px ui-monospace, "DejaVu Sans Mono", monospace';

function lastWindow(newest) {
  const end = Number.isFinite(newest) ? newest : Math.floor(Date.now() / 1000);
  return [end - WINDOW_S, end];
}

function timeLabel(seconds, withSeconds) {
  const d = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, '0');
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  return withSeconds ? `${hm}:${two(d.getSeconds())}` : hm;
}

function chartOptions(width, color, fill, format) {
  return {
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { y: false, points: { size: 5, fill: color }, drag: { x: false, y: false } },
    scales: {
      x: { time: true, range: (u, min, max) => lastWindow(max) },
      y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
    },
    axes: [
      {
        stroke: AXIS, font: FONT, size: 18, gap: 2, space: 40, incrs: [15, 30, 60, 120, 300],
        grid: { stroke: GRID, width: 1 }, ticks: { show: false },
        values: (u, splits) => splits.map((t) => timeLabel(t, splits[1] - splits[0] < 60)),
      },
      {
        stroke: AXIS, font: FONT, size: 46, gap: 4, space: 22,
        grid: { stroke: GRID, width: 1 }, ticks: { show: false },
        values: (u, values) => values.map((v) => format(v)),
      },
    ],
    series: [
      {},
      { stroke: color, width: 1.5, fill, points: { show: false } },
    ],
  };
}

class RateChart {
  #el;
  #readout;
  #format;
  #plot = null;
  #latest = 0;
  xs = [];
  ys = [];

  constructor(el, readout, color, fill, format) {
    this.#el = el;
    this.#readout = readout;
    this.#format = format;
    if (typeof window.uPlot !== 'function') {
      el.textContent = 'Chart library not loaded.';
      return;
    }
    const width = Math.max(200, el.clientWidth);
    this.#plot = new window.uPlot(chartOptions(width, color, fill, format), [[], []], el);
    this.#plot.hooks.setCursor = [(u) => this.#showCursor(u)];
    new ResizeObserver(() => {
      if (this.#el.clientWidth > 0) this.#plot.setSize({ width: this.#el.clientWidth, height: HEIGHT });
    }).observe(el);
  }

  set(xs, ys) {
    this.xs = xs;
    this.ys = ys;
    this.#latest = ys.length ? ys[ys.length - 1] : 0;
    this.#plot?.setData([xs, ys]);
    this.#el.dataset.points = String(xs.length);
    this.#el.dataset.latest = String(this.#latest);
    if (this.#plot?.cursor.idx === null || this.#plot?.cursor.idx === undefined) {
      this.#readout.textContent = this.#format(this.#latest);
    }
  }

  #showCursor(u) {
    const i = u.cursor.idx;
    if (i === null || i === undefined || this.xs[i] === undefined) {
      this.#readout.textContent = this.#format(this.#latest);
      return;
    }
    const t = new Date(this.xs[i] * 1000).toLocaleTimeString([], { hour12: false });
    this.#readout.textContent = `${this.#format(this.ys[i])} at ${t}`;
  }
}

export class RateCharts {
  #seconds = new Map(); // unix second -> [packets, bytes]
  #windowS;
  #pps;
  #bps;

  constructor({ ppsEl, bpsEl, ppsReadout, bpsReadout, windowS = WINDOW_S }) {
    this.#windowS = windowS;
    this.#pps = new RateChart(ppsEl, ppsReadout, '#3fb6a8', 'rgba(63, 182, 168, 0.16)', compact);
    this.#bps = new RateChart(bpsEl, bpsReadout, '#6c9eff', 'rgba(108, 158, 255, 0.16)', bytes);
  }

  async loadHistory(session) {
    const minutes = Math.ceil(this.#windowS / 60);
    const ask = (metric) =>
      session.request('GET', `/api/stats/timeline?interval=1s&metric=${metric}&minutes=${minutes}`);
    const [packets, octets] = await Promise.all([ask('packets'), ask('bytes')]);
    for (const point of packets.points ?? []) this.#put(point.t, 0, point.value);
    for (const point of octets.points ?? []) this.#put(point.t, 1, point.value);
    this.#redraw();
  }

  addStats(stats) {
    const ms = Date.parse(stats.timestamp);
    const second = Number.isNaN(ms) ? Math.floor(Date.now() / 1000) - 1 : Math.floor(ms / 1000) - 1;
    this.#put(second, 0, stats.packets_per_second ?? 0);
    this.#put(second, 1, stats.bytes_per_second ?? 0);
    this.#redraw();
  }

  #put(second, index, value) {
    const entry = this.#seconds.get(second) ?? [0, 0];
    entry[index] = value;
    this.#seconds.set(second, entry);
  }

  #redraw() {
    const keys = [...this.#seconds.keys()].sort((a, b) => a - b);
    const newest = keys[keys.length - 1] ?? 0;
    const xs = [];
    const pps = [];
    const bps = [];
    for (const second of keys) {
      if (second <= newest - this.#windowS) {
        this.#seconds.delete(second);
        continue;
      }
      const [p, b] = this.#seconds.get(second);
      xs.push(second);
      pps.push(p);
      bps.push(b);
    }
    this.#pps.set(xs, pps);
    this.#bps.set(xs, bps);
  }
}
