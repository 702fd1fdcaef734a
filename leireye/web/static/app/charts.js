// Packets/s and bytes/s over the last minutes (uPlot, vendored in /static/vendor/uplot).
//
// History comes from /api/stats/timeline when the console opens; then every `stats` message
// adds its second. Both are keyed by the Unix second, so a live second that the history already
// holds replaces it instead of drawing twice.
//
// Three y scales, since one spike must not flatten minutes of data: linear; 'log' (uPlot's
// asinh scale: log-like, yet 0 stays on the axis); and 'p99', linear up to the 99th percentile,
// with what runs off the top said in a note. Pointing at a chart shows the value and time in a
// tip at the cursor and in the readout. Colours come from the theme's CSS variables: restyle()
// after a theme change.

import { bytes, compact } from './format.js';

const WINDOW_S = 300;
const FONT = '11px ui-monospace, "DejaVu Sans Mono", monospace';
const CHAR_PX = 7; // width of one FONT character, for the y axis' room
// y tick steps: whole 1-2-5 steps (no "1, 1, 0" axis for rates under 2); for bytes the same
// in powers of two within each binary unit, so ticks read 512 B/s, 1.0 KiB/s, 2.0 KiB/s.
const STEPS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
const COUNT_INCRS = Array.from({ length: 16 }, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();
const BYTE_INCRS = Array.from({ length: 6 }, (_, e) => STEPS.map((m) => m * 1024 ** e)).flat();
// On the log scale: 0, then powers of 10 (counts) or of 32 (bytes: 1 B, 32 B, 1 KiB, 32 KiB, …).
const COUNT_LOG = [0, ...Array.from({ length: 16 }, (_, e) => 10 ** e)];
const BYTE_LOG = [0, ...Array.from({ length: 12 }, (_, e) => 32 ** e)];

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

// The q-quantile (0..1) of the values, by nearest rank.
export function quantile(values, q) {
  if (values.length === 0) return 0;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// The y range for the data's largest value `max`: on 'p99' the largest value is the 99th
// percentile, whatever runs above it is cut off.
function yRange(mode, ys, max) {
  if (mode === 'p99') return [0, Math.max(1, quantile(ys, 0.99) * 1.1)];
  if (mode === 'log') return [0, Math.max(10, max * 2)];
  return [0, Math.max(1, max * 1.15)];
}

class RateChart {
  #el;
  #readout;
  #format;
  #colors;
  #plot = null;
  #tip;
  #note;
  #latest = 0;
  #mode = 'linear';
  xs = [];
  ys = [];

  #incrs;

  #logSplits;

  constructor(el, readout, colors, format, incrs, logSplits) {
    this.#incrs = incrs;
    this.#logSplits = logSplits;
    this.#el = el;
    this.#readout = readout;
    this.#format = format;
    this.#colors = colors;
    this.#tip = document.createElement('div');
    this.#tip.className = 'chart-tip';
    this.#tip.hidden = true;
    this.#note = document.createElement('div');
    this.#note.className = 'chart-note';
    this.#note.hidden = true;
    if (typeof window.uPlot !== 'function') {
      el.textContent = 'Chart library not loaded.';
      return;
    }
    this.#build();
    new ResizeObserver(() => {
      if (this.#el.clientWidth > 0) this.#plot?.setSize(this.#size());
    }).observe(el);
  }

  set mode(mode) {
    this.#mode = mode;
    this.#build();
  }

  // Rebuild with the current theme's colours and scale.
  restyle() {
    this.#build();
  }

  set(xs, ys) {
    this.xs = xs;
    this.ys = ys;
    this.#latest = ys.length ? ys[ys.length - 1] : 0;
    this.#plot?.setData([xs, ys]);
    this.#el.dataset.points = String(xs.length);
    this.#el.dataset.latest = String(this.#latest);
    this.#showNote();
    if (this.#plot?.cursor.idx === null || this.#plot?.cursor.idx === undefined) {
      this.#readout.textContent = this.#format(this.#latest);
    }
  }

  #size() {
    return { width: Math.max(200, this.#el.clientWidth), height: Math.max(60, this.#el.clientHeight) };
  }

  #build() {
    if (typeof window.uPlot !== 'function') return;
    this.#plot?.destroy();
    this.#plot = new window.uPlot(this.#options(), [this.xs, this.ys], this.#el);
    this.#plot.over.append(this.#tip);
    this.#el.append(this.#note);
    this.#el.dataset.scale = this.#mode;
    this.#showNote();
  }

  #options() {
    const axis = cssVar('--chart-axis') || '#7f8c99';
    const grid = { stroke: cssVar('--chart-grid') || 'rgba(148, 163, 184, 0.1)', width: 1 };
    const color = cssVar(this.#colors[0]) || '#3fb6a8';
    const fill = cssVar(this.#colors[1]) || 'transparent';
    const format = this.#format;
    const log = this.#mode === 'log';
    const y = { range: (u, min, max) => yRange(this.#mode, this.ys, max ?? 0) };
    if (log) Object.assign(y, { distr: 4, log: 10, asinh: 1 });
    // On the log scale uPlot's own splits crowd together: the fixed ones, kept 14 px apart.
    const logSplits = (u, i, min, max) => {
      const kept = [];
      let last = Infinity;
      for (const v of this.#logSplits) {
        if (v > max) break;
        const at = u.valToPos(v, 'y');
        if (last - at >= 14) {
          kept.push(v);
          last = at;
        }
      }
      return kept;
    };
    return {
      ...this.#size(),
      legend: { show: false },
      cursor: { y: false, points: { size: 6, fill: color }, drag: { x: false, y: false } },
      scales: { x: { time: true, range: (u, min, max) => lastWindow(max) }, y },
      axes: [
        {
          stroke: axis, font: FONT, size: 24, gap: 8, space: 70,
          incrs: [10, 15, 30, 60, 120, 300], grid, ticks: { show: true, size: 3, stroke: grid.stroke },
          values: (u, splits) => splits.map((t) => timeLabel(t, splits[1] - splits[0] < 60)),
        },
        {
          stroke: axis, font: FONT, gap: 4, space: 14, grid, ticks: { show: false },
          // (uPlot's own filter on a log axis would blank all but powers of 10)
          ...(log ? { splits: logSplits, filter: (u, splits) => splits } : { incrs: this.#incrs }),
          size: (u, values) => 10 + CHAR_PX * Math.max(3, ...(values ?? []).map((v) => v.length)),
          values: (u, values) => values.map((v) => (v === null ? '' : format(v))),
        },
      ],
      series: [{}, { stroke: color, width: 1.5, fill, points: { show: false } }],
      hooks: { setCursor: [(u) => this.#showCursor(u)] },
    };
  }

  #showNote() {
    const clipped = this.#mode === 'p99' && this.ys.length > 0;
    const top = clipped ? yRange('p99', this.ys, 0)[1] : 0;
    const peak = clipped ? Math.max(...this.ys) : 0;
    this.#note.hidden = !(clipped && peak > top);
    this.#note.textContent = this.#note.hidden ? '' : `clipped · peak ${this.#format(peak)}`;
  }

  #showCursor(u) {
    const i = u.cursor.idx;
    if (i === null || i === undefined || this.xs[i] === undefined) {
      this.#tip.hidden = true;
      this.#readout.textContent = this.#format(this.#latest);
      return;
    }
    const t = new Date(this.xs[i] * 1000).toLocaleTimeString([], { hour12: false });
    const text = `${this.#format(this.ys[i])} at ${t}`;
    this.#readout.textContent = text;
    this.#tip.textContent = text;
    this.#tip.hidden = false;
    const left = u.cursor.left ?? 0;
    const width = this.#tip.offsetWidth;
    const room = u.over.clientWidth;
    this.#tip.style.left = `${Math.max(0, Math.min(room - width, left + 8 > room - width ? left - width - 8 : left + 8))}px`;
  }
}

const perSecond = (format) => (v) => `${format(v)}/s`;

export class RateCharts {
  #seconds = new Map(); // unix second -> [packets, bytes]
  #windowS;
  #pps;
  #bps;

  constructor({ ppsEl, bpsEl, ppsReadout, bpsReadout, windowS = WINDOW_S }) {
    this.#windowS = windowS;
    this.#pps = new RateChart(ppsEl, ppsReadout, ['--chart-pps', '--chart-pps-fill'], compact,
      COUNT_INCRS, COUNT_LOG);
    this.#bps = new RateChart(bpsEl, bpsReadout, ['--chart-bps', '--chart-bps-fill'],
      perSecond(bytes), BYTE_INCRS, BYTE_LOG);
  }

  set scale(mode) {
    this.#pps.mode = mode;
    this.#bps.mode = mode;
  }

  restyle() {
    this.#pps.restyle();
    this.#bps.restyle();
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
