// A time range for the history views: the last 5 min, 1 h, 24 h, 7 d, or a custom range.
//
// `range()` gives {fromMs, toMs, stepS}; the step is the smallest of STEPS_S that keeps the
// range within MAX_POINTS intervals (the store keeps minutes, so never under a minute).

import { h } from './dom.js';

const PRESETS = [
  ['5m', 'Last 5 min', 5 * 60], ['1h', 'Last hour', 3600], ['24h', 'Last 24 h', 86400],
  ['7d', 'Last 7 days', 7 * 86400], ['custom', 'Custom…', 0],
];
const STEPS_S = [60, 300, 900, 1800, 3600, 7200, 21600, 86400];
const MAX_POINTS = 300;

export function stepFor(spanS) {
  return STEPS_S.find((step) => spanS / step <= MAX_POINTS) ?? STEPS_S[STEPS_S.length - 1];
}

const pad2 = (n) => String(n).padStart(2, '0');

// A datetime-local value (local time, minutes) for a time in ms.
function localInput(msValue) {
  const d = new Date(msValue);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

export class RangePicker {
  #select;
  #from;
  #to;
  #apply;
  #custom;
  #onChange;

  constructor(el, onChange, initial = '1h') {
    this.#onChange = onChange;
    this.#select = h('select', { class: 'range-select', 'aria-label': 'Time range' },
      PRESETS.map(([value, label]) => h('option', { value }, label)));
    this.#select.value = initial;
    this.#from = h('input', { type: 'datetime-local', class: 'range-from', 'aria-label': 'From' });
    this.#to = h('input', { type: 'datetime-local', class: 'range-to', 'aria-label': 'To' });
    this.#apply = h('button', { type: 'button', class: 'ghost range-apply' }, 'Show');
    this.#custom = h('span', { class: 'range-custom', hidden: true }, this.#from, '–', this.#to, this.#apply);
    el.replaceChildren(this.#select, this.#custom);
    this.#select.addEventListener('change', () => {
      const custom = this.#select.value === 'custom';
      this.#custom.hidden = !custom;
      if (custom) {
        const now = Date.now();
        this.#from.value ||= localInput(now - 3600 * 1000);
        this.#to.value ||= localInput(now);
      }
      this.#onChange(this.range());
    });
    this.#apply.addEventListener('click', () => this.#onChange(this.range()));
  }

  get preset() {
    return this.#select.value;
  }

  range() {
    const now = Date.now();
    let fromMs;
    let toMs;
    if (this.#select.value === 'custom') {
      fromMs = Date.parse(this.#from.value);
      toMs = Date.parse(this.#to.value);
      if (!Number.isFinite(fromMs) || !Number.isFinite(toMs) || toMs <= fromMs) {
        return { fromMs: now - 3600 * 1000, toMs: now, stepS: 60, invalid: true };
      }
    } else {
      const span = PRESETS.find(([value]) => value === this.#select.value)[2];
      toMs = now;
      fromMs = now - span * 1000;
    }
    return { fromMs, toMs, stepS: stepFor((toMs - fromMs) / 1000) };
  }
}
