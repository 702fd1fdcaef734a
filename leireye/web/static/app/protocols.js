// The Protocols view: bytes (or packets) per application over a time range, stacked
// (GET /api/stats/protocols from the flow store), refreshed every minute while shown when the
// range ends now.

import { bytes, compact } from './format.js';
import { protocolSeries, ms } from './flowdata.js';
import { RangePicker } from './timerange.js';
import { StackedChart } from './stacked.js';

const POLL_MS = 60000;

export class ProtocolsView {
  #session;
  #root;
  #picker;
  #chart;
  #metric;
  #timer = null;
  #request = 0;
  shown = false;

  constructor({ session, root }) {
    this.#session = session;
    this.#root = root;
    this.#metric = root.querySelector('#protocols-metric');
    this.#picker = new RangePicker(root.querySelector('#protocols-range'), () => this.load(), '1h');
    this.#chart = new StackedChart(root.querySelector('#protocols-chart'),
      root.querySelector('#protocols-legend'), bytes);
    this.#metric.addEventListener('change', () => this.load());
  }

  restyle() {
    this.#chart.restyle();
  }

  show() {
    this.shown = true;
    this.load();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => {
      if (!document.hidden && this.#picker.preset !== 'custom') this.load();
    }, POLL_MS);
  }

  hide() {
    this.shown = false;
    clearInterval(this.#timer);
  }

  async load() {
    const request = ++this.#request;
    const range = this.#picker.range();
    const message = this.#root.querySelector('#protocols-message');
    const metric = this.#metric.value;
    this.#root.dataset.state = 'loading';
    let rows;
    try {
      rows = await protocolSeries(this.#session, range);
    } catch (err) {
      if (request !== this.#request) return;
      message.hidden = false;
      message.dataset.kind = 'error';
      message.textContent = err.status === 404
        ? 'This sensor does not keep protocol history (no /api/stats/protocols).' : err.message;
      this.#root.dataset.state = 'error';
      return;
    }
    if (request !== this.#request) return;
    message.hidden = !(range.invalid || rows.length === 0);
    message.dataset.kind = '';
    message.textContent = range.invalid ? 'The custom range is not valid: showing the last hour.'
      : 'No traffic recorded in this range.';
    const points = rows.map((r) => ({ t: ms(r.start_ns), key: r.app, value: r[metric] ?? 0 }));
    this.#chart.format = metric === 'bytes' ? bytes : compact;
    this.#chart.set(points, range);
    this.#root.dataset.metric = metric;
    this.#root.dataset.range = this.#picker.preset;
    this.#root.dataset.state = 'loaded';
  }
}
