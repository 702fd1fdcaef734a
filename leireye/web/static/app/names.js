// The names of addresses, as the sensor observed them passively (DNS answers, TLS SNI, HTTP
// Host: `Host.names` from GET /api/hosts), shown beside addresses everywhere in the console.
//
// One cache for the page: refreshed every REFRESH_MS while the page is visible, and taught by
// the views that fetch hosts anyway. `fill(el, ip)` writes an address element: the first name
// when one is known (the address on hover), else the address; every address element carries
// `data-ip`, which the views turn into a link to the host page.

import { Emitter, h } from './dom.js';
import { listHosts } from './flowdata.js';

const REFRESH_MS = 5000;

export class NameCache extends Emitter {
  #session;
  #names = new Map(); // ip -> [name, ...]
  #timer = null;
  available = true; // false once the sensor says it has no /api/hosts

  constructor(session) {
    super();
    this.#session = session;
  }

  start() {
    this.refresh();
    this.#timer = setInterval(() => {
      if (!document.hidden) this.refresh();
    }, REFRESH_MS);
  }

  async refresh() {
    if (!this.available) return;
    try {
      const { hosts, live } = await listHosts(this.#session, { limit: 1000 });
      this.learn(hosts);
      this.learn(live); // the flow process's hosts: names seen seconds ago
    } catch (err) {
      if (err.status === 404) {
        this.available = false;
        clearInterval(this.#timer);
      } else {
        console.warn('host names', err);
      }
    }
  }

  // Take the names of these hosts ({ip, names}); 'change' when any differs.
  learn(hosts) {
    let changed = false;
    for (const host of hosts ?? []) {
      const names = host?.names ?? [];
      if (!host?.ip || names.length === 0) continue;
      const known = this.#names.get(host.ip);
      if (known && known.join('\n') === names.join('\n')) continue;
      this.#names.set(host.ip, names.slice());
      changed = true;
    }
    if (changed) this.emit('change');
  }

  names(ip) {
    return this.#names.get(ip) ?? [];
  }

  name(ip) {
    return this.#names.get(ip)?.[0] ?? null;
  }

  // The text to search in for an address: itself and its names.
  searchText(ip) {
    return `${ip ?? ''} ${this.names(ip).join(' ')}`.toLowerCase();
  }

  fill(el, ip, port = null) {
    const address = ip ?? '';
    const name = address ? this.name(address) : null;
    const suffix = port === null || port === undefined ? '' : `:${port}`;
    el.textContent = `${name ?? address}${suffix}`;
    el.title = name ? `${address}${suffix} · ${this.names(address).join(', ')}` : address;
    el.dataset.ip = address;
    el.classList.toggle('named', Boolean(name));
    return el;
  }

  // A new address element (for tables drawn whole).
  node(ip, port = null) {
    return this.fill(h('span', { class: 'addr' }), ip, port);
  }
}
