// The Hosts view (GET /api/hosts, polled while shown) and the host page (GET /api/hosts/{ip}):
// what one address did over a time range, its peers, and its traffic by application.

import { h } from './dom.js';
import { DataTable } from './datatable.js';
import { bytes, count, dateTime } from './format.js';
import { getHost, listHosts, ms } from './flowdata.js';
import { RangePicker } from './timerange.js';
import { StackedChart } from './stacked.js';
import { addressKey } from './sorting.js';

const POLL_MS = 5000;
const HOST_POLL_MS = 15000;


// The stored hosts of the range, plus the flow process's live hosts no stored minute holds yet
// (marked `live`); a stored host also gets the names the live one has seen since.
export function withLive(stored, live) {
  const rows = (stored ?? []).map((row) => ({ ...row }));
  const byIp = new Map(rows.map((row) => [row.ip, row]));
  for (const host of live ?? []) {
    const row = byIp.get(host.ip);
    if (row === undefined) {
      rows.push({ ...host, peers: host.peers ?? 0, live: true });
    } else {
      row.names = [...new Set([...(row.names ?? []), ...(host.names ?? [])])];
    }
  }
  return rows;
}

export class HostsView {
  #session;
  #names;
  #table;
  #search;
  #message;
  #countEl;
  #hosts = [];
  #timer = null;
  #request = 0;
  shown = false;

  constructor({ session, names, table, search, message, countEl, onHost }) {
    this.#session = session;
    this.#names = names;
    this.#search = search;
    this.#message = message;
    this.#countEl = countEl;
    this.#table = new DataTable(table, [
      { key: 'ip', label: 'Host', cls: 'c-addr', sort: (x) => addressKey(x.ip), cell: (x) => h('span', {}, names.node(x.ip), names.name(x.ip) ? h('span', { class: 'muted' }, ` ${x.ip}`) : null) },
      { key: 'names', label: 'Names seen', cls: 'c-info', title: 'Names observed passively: DNS answers, TLS SNI, HTTP Host', sort: (x) => (x.names ?? []).join(' '), cell: (x) => h('span', { title: (x.names ?? []).join(', ') }, (x.names ?? []).join(', ')) },
      { key: 'pkts_sent', label: 'Sent pkts', cls: 'c-num', sort: (x) => x.pkts_sent, cell: (x) => count(x.pkts_sent) },
      { key: 'bytes_sent', label: 'Sent', cls: 'c-num', sort: (x) => x.bytes_sent, cell: (x) => bytes(x.bytes_sent) },
      { key: 'pkts_recv', label: 'Recv pkts', cls: 'c-num', sort: (x) => x.pkts_recv, cell: (x) => count(x.pkts_recv) },
      { key: 'bytes_recv', label: 'Received', cls: 'c-num', sort: (x) => x.bytes_recv, cell: (x) => bytes(x.bytes_recv) },
      { key: 'peers', label: 'Peers', cls: 'c-num', sort: (x) => x.peers, cell: (x) => count(x.peers) },
      { key: 'first', label: 'First seen', cls: 'c-time', sort: (x) => x.first_ns, cell: (x) => dateTime(ms(x.first_ns)) },
      { key: 'last', label: 'Last seen', cls: 'c-time', sort: (x) => x.last_ns, cell: (x) => dateTime(ms(x.last_ns)) },
    ], { sort: { column: 'bytes_sent', direction: 'desc' }, rowKey: (x) => x.ip, emptyText: 'No host yet.' });
    this.#table.on('pick', (x) => onHost(x.ip));
    this.#table.on('address', onHost);
    for (const type of ['input', 'search']) search.addEventListener(type, () => this.#draw());
    names.on('change', () => this.shown && this.#draw());
  }

  show() {
    this.shown = true;
    this.refresh();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => {
      if (!document.hidden) this.refresh();
    }, POLL_MS);
  }

  hide() {
    this.shown = false;
    clearInterval(this.#timer);
  }

  async refresh() {
    const request = ++this.#request;
    try {
      const { hosts, live } = await listHosts(this.#session);
      if (request !== this.#request) return;
      this.#hosts = withLive(hosts, live);
      this.#names.learn(this.#hosts);
      this.#message.hidden = true;
    } catch (err) {
      if (request !== this.#request) return;
      this.#message.hidden = false;
      this.#message.dataset.kind = 'error';
      this.#message.textContent = err.status === 404
        ? 'This sensor does not keep hosts (no /api/hosts).' : err.message;
    }
    this.#draw();
  }

  #draw() {
    const words = this.#search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = this.#hosts.filter((x) => {
      const text = `${this.#names.searchText(x.ip)} ${(x.names ?? []).join(' ')}`.toLowerCase();
      return words.every((word) => text.includes(word));
    });
    this.#table.emptyText = words.length ? 'No host matches.' : 'No host yet.';
    this.#table.setItems(rows);
    const of = rows.length === this.#hosts.length ? '' : ` of ${count(this.#hosts.length)}`;
    this.#countEl.textContent = `${count(rows.length)}${of} hosts`;
  }
}

export class HostPage {
  #session;
  #names;
  #root;
  #chart;
  #peers;
  #picker;
  #request = 0;
  #timer = null;
  ip = null;
  shown = false;

  constructor({ session, names, root, onAddress, onPackets }) {
    this.#session = session;
    this.#names = names;
    this.#root = root;
    this.#picker = new RangePicker(root.querySelector('#host-range'), () => this.load(), '1h');
    this.#chart = new StackedChart(root.querySelector('#host-chart'), root.querySelector('#host-legend'), bytes);
    this.#peers = new DataTable(root.querySelector('#host-peers'), [
      { key: 'ip', label: 'Peer', cls: 'c-addr', sort: (p) => addressKey(p.ip), cell: (p) => names.node(p.ip) },
      { key: 'flows', label: 'Flows', cls: 'c-num', sort: (p) => p.flows, cell: (p) => count(p.flows) },
      { key: 'packets', label: 'Packets', cls: 'c-num', sort: (p) => p.packets, cell: (p) => count(p.packets) },
      { key: 'bytes', label: 'Bytes', cls: 'c-num', sort: (p) => p.bytes, cell: (p) => bytes(p.bytes) },
    ], { sort: { column: 'bytes', direction: 'desc' }, rowKey: (p) => p.ip, emptyText: 'No peer in this range.' });
    this.#peers.on('pick', (p) => onAddress(p.ip));
    this.#peers.on('address', onAddress);
    root.querySelector('#host-packets').addEventListener('click', () => onPackets(this.ip));
  }

  restyle() {
    this.#chart.restyle();
  }

  // Shown, the page follows the store and the live host: reloaded every HOST_POLL_MS (its
  // peers and chart come from stored minutes, written once a minute).
  show(ip) {
    this.ip = ip;
    this.shown = true;
    this.#root.dataset.ip = ip;
    this.load();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => {
      if (!document.hidden) this.load({ quiet: true });
    }, HOST_POLL_MS);
  }

  hide() {
    this.shown = false;
    clearInterval(this.#timer);
  }

  async load({ quiet = false } = {}) {
    const ip = this.ip;
    if (ip === null) return;
    const request = ++this.#request;
    const range = this.#picker.range();
    const title = this.#root.querySelector('#host-title');
    this.#names.fill(title.querySelector('.addr'), ip);
    title.querySelector('.host-ip').textContent = this.#names.name(ip) ? ip : '';
    const message = this.#root.querySelector('#host-message');
    if (!quiet) {
      message.hidden = false;
      message.dataset.kind = '';
      message.textContent = range.invalid ? 'The custom range is not valid: showing the last hour.' : 'Loading…';
      this.#root.dataset.state = 'loading';
    }
    let data;
    try {
      data = await getHost(this.#session, ip, range);
    } catch (err) {
      if (request !== this.#request) return;
      data = null;
      if (err.status !== 404) {
        message.dataset.kind = 'error';
        message.textContent = err.message;
        this.#root.dataset.state = 'error';
        return;
      }
    }
    if (request !== this.#request) return;
    this.#render(data, range);
  }

  #render(data, range) {
    const message = this.#root.querySelector('#host-message');
    // The store's minutes of the range; else (none written yet) the flow process's live host.
    const summary = data?.summary ?? data?.live ?? null;
    const apps = data?.apps?.length ? data.apps
      : Object.entries(data?.live?.apps ?? {}).map(([app, b]) => ({ app, bytes: b }))
        .sort((a, b) => b.bytes - a.bytes);
    if (summary) this.#names.learn([{ ip: this.ip, names: summary.names ?? [] }]);
    this.#names.fill(this.#root.querySelector('#host-title .addr'), this.ip);
    this.#root.querySelector('#host-title .host-ip').textContent = this.#names.name(this.ip) ? this.ip : '';
    message.hidden = Boolean(data);
    message.textContent = data ? '' : 'This address was not seen in this time range.';
    const facts = this.#root.querySelector('#host-facts');
    const fact = (label, value, id) => h('div', { class: 'fact', id }, h('span', { class: 'muted' }, label), h('b', { title: value }, value));
    facts.replaceChildren(...(summary ? [
      fact('Names', (summary.names ?? []).join(', ') || '—', 'host-names'),
      fact('Sent', `${bytes(summary.bytes_sent)} · ${count(summary.pkts_sent)} pkts`, 'host-sent'),
      fact('Received', `${bytes(summary.bytes_recv)} · ${count(summary.pkts_recv)} pkts`, 'host-recv'),
      fact('Peers', count(summary.peers), 'host-peer-count'),
      fact('Ports served', (summary.ports_served ?? []).join(', ') || '—', 'host-ports'),
      fact('First seen', dateTime(ms(summary.first_ns))),
      fact('Last seen', dateTime(ms(summary.last_ns))),
      fact('Applications', apps.map((a) => `${a.app} ${bytes(a.bytes)}`).join(', ') || '—', 'host-apps'),
    ] : []));
    this.#peers.setItems(data?.peers ?? []);
    const points = (data?.series ?? []).map((s) => ({ t: ms(s.start_ns), key: s.app, value: s.bytes }));
    this.#chart.set(points, range);
    this.#root.dataset.state = 'loaded';
  }
}
