// The side panels: protocol breakdown (live, from `stats`) and top talkers (/api/stats/top).

import { h, $$ } from './dom.js';
import { bytes, compact } from './format.js';
import { protocolClass } from './table.js';

function barRow({ label, cls, value, max, text, title, onClick }) {
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${max > 0 ? Math.max(1, (100 * value) / max) : 0}%`;
  const row = h('div', { class: `bar-row ${cls ?? ''}`, title: title ?? label },
    h('span', { class: 'bar-label' }, label),
    h('span', { class: 'bar-track' }, fill),
    h('span', { class: 'bar-value' }, text));
  if (onClick) {
    row.classList.add('clickable');
    row.addEventListener('click', onClick);
  }
  return row;
}

// Packets per second by protocol and by application, averaged over the last `windowS` stats.
export class ProtocolBars {
  #el;
  #window = [];
  #windowS;

  constructor(el, windowS = 10) {
    this.#el = el;
    this.#windowS = windowS;
    this.#draw();
  }

  addStats(stats) {
    this.#window.push({ protocols: stats.protocols ?? {}, apps: stats.apps ?? {} });
    if (this.#window.length > this.#windowS) this.#window.shift();
    this.#draw();
  }

  #average(key) {
    const sums = new Map();
    for (const entry of this.#window) {
      for (const [name, value] of Object.entries(entry[key])) {
        sums.set(name, (sums.get(name) ?? 0) + value);
      }
    }
    const n = Math.max(1, this.#window.length);
    return [...sums.entries()]
      .map(([name, total]) => [name, total / n])
      .filter(([, rate]) => rate > 0)
      .sort((a, b) => b[1] - a[1]);
  }

  #draw() {
    const protocols = this.#average('protocols');
    const apps = this.#average('apps').slice(0, 4);
    if (protocols.length === 0) {
      this.#el.replaceChildren(h('p', { class: 'empty-note' }, 'No traffic in the last 10 s.'));
      return;
    }
    const total = protocols.reduce((sum, [, rate]) => sum + rate, 0);
    const rows = protocols.slice(0, 5).map(([name, rate]) =>
      barRow({
        label: name, cls: protocolClass(name), value: rate, max: total,
        text: `${rate < 10 ? rate.toFixed(1) : compact(rate)}/s · ${Math.round((100 * rate) / total)}%`,
      }));
    if (apps.length) {
      rows.push(h('div', { class: 'chips' },
        apps.map(([name, rate]) =>
          h('span', { class: `chip ${protocolClass(name)}` }, `${name} ${rate < 10 ? rate.toFixed(1) : compact(rate)}/s`))));
    }
    this.#el.replaceChildren(...rows);
  }
}

// The heaviest sources, destinations and ports: click one to filter the table on it.
export class TopTalkers {
  #el;
  #windowEl;
  #tabs;
  #data = null;
  tab = 'sources';

  constructor({ el, windowEl, tabs, onPick, names = null }) {
    this.names = names;
    this.#el = el;
    this.#windowEl = windowEl;
    this.#tabs = tabs;
    this.onPick = onPick;
    for (const button of $$('button', tabs)) {
      button.addEventListener('click', () => {
        this.tab = button.dataset.tab;
        for (const b of $$('button', tabs)) b.setAttribute('aria-selected', String(b === button));
        this.#draw();
      });
    }
    this.#draw();
  }

  update(data) {
    this.#data = data;
    this.#windowEl.textContent = data?.window_s ? `last ${data.window_s} s` : '';
    this.#draw();
  }

  #draw() {
    const entries = (this.#data?.[this.tab] ?? []).slice(0, 6);
    if (entries.length === 0) {
      this.#el.replaceChildren(h('p', { class: 'empty-note' }, 'Nothing yet.'));
      return;
    }
    const max = Math.max(...entries.map((e) => e.packets));
    this.#el.replaceChildren(...entries.map((e) => {
      const port = this.tab === 'ports';
      const label = port ? `${e.protocol} ${e.port}` : e.address;
      const name = port ? null : this.names?.name(e.address);
      return barRow({
        label: name ?? label, cls: port ? protocolClass(e.protocol) : 'addr', value: e.packets, max,
        text: `${compact(e.packets)} · ${bytes(e.bytes)}`,
        title: `${name ? `${name} · ` : ''}${label}: ${e.packets} packets, ${e.bytes} bytes — click to filter`,
        onClick: () => this.onPick(this.tab, e),
      });
    }));
  }
}
