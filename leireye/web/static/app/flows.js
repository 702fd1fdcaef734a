// The Conversations view: the flow table (GET /api/flows, polled while the view is shown).
//
// Columns sort as in the packet table; the search box narrows the rows to those whose
// addresses, names, application, state or info contain every word typed; the packet view's
// filters apply (the flow query takes the same keys, less the per-packet length bounds).
// Clicking a row shows the flow's packets; clicking an address, its host page. At a fleet
// central each flow names its sensor: the Sensor column shows there only (the console's
// `central` class, as the packet table's), and the sensor selector narrows the list.

import { h } from './dom.js';
import { DataTable } from './datatable.js';
import { bytes, clock, count } from './format.js';
import { flowFilters, listFlows, ms } from './flowdata.js';
import { addressKey } from './sorting.js';
import { protocolClass } from './table.js';

const POLL_MS = 2000;

// 1234 ms -> "1.23 s"; 125000 -> "2 m 5 s"
export function duration(msValue) {
  const v = Math.max(0, msValue ?? 0);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  const s = Math.round(v / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
}

// The first application fields of a flow, as one line.
export function flowInfo(f) {
  const parts = [];
  if (f.dns_query) parts.push(`DNS ${f.dns_query}${f.dns_rcode ? ` ${f.dns_rcode}` : ''}`);
  if (f.tls_sni) parts.push(`SNI ${f.tls_sni}${f.tls_alpn ? ` (${f.tls_alpn})` : ''}`);
  if (f.http_method || f.http_host) {
    parts.push(`${f.http_method ?? 'HTTP'} ${f.http_host ?? ''}${f.http_path ?? ''}`.trim());
  }
  if (f.ssh_banner) parts.push(f.ssh_banner);
  if (f.icmp_id !== null && f.icmp_id !== undefined) parts.push(`ICMP id ${f.icmp_id}`);
  return parts.join(' · ');
}

const active = (f) => f.end_reason === null || f.end_reason === undefined;

function stateCell(f) {
  const text = f.conn_state ?? (active(f) ? '' : '–');
  return h('span', { title: `history ${f.history || '–'}${active(f) ? ' · active' : ` · ended: ${f.end_reason}`}` },
    active(f) ? h('span', { class: 'live-dot', 'aria-label': 'active' }) : null, text);
}

export class FlowsView {
  #session;
  #names;
  #table;
  #search;
  #message;
  #countEl;
  #filters = {};
  #timer = null;
  #request = 0;
  #flows = [];
  shown = false;

  constructor({ session, names, table, search, message, countEl, onFlow, onAddress }) {
    this.#session = session;
    this.#names = names;
    this.#search = search;
    this.#message = message;
    this.#countEl = countEl;
    const addr = (ip, port) => names.node(ip, port);
    this.#table = new DataTable(table, [
      { key: 'start', label: 'Start', cls: 'c-time', sort: (f) => f.first_ns, cell: (f) => clock(ms(f.first_ns)) },
      { key: 'sensor', label: 'Sensor', cls: 'c-sensor', title: 'The sensor that saw it', sort: (f) => f.sensor ?? '', cell: (f) => f.sensor ?? '' },
      { key: 'orig', label: 'Originator', cls: 'c-addr', title: 'Who sent the first packet (for TCP, the SYN)', sort: (f) => addressKey(f.orig_ip), cell: (f) => addr(f.orig_ip, f.orig_port) },
      { key: 'resp', label: 'Responder', cls: 'c-addr', sort: (f) => addressKey(f.resp_ip), cell: (f) => addr(f.resp_ip, f.resp_port) },
      { key: 'transport', label: 'Transport', cls: 'c-proto', sort: (f) => f.transport, cell: (f) => f.transport },
      { key: 'app', label: 'App', cls: 'c-app', sort: (f) => f.app, cell: (f) => (f.app ? h('span', { class: `proto-tag ${protocolClass(f.app)}` }, f.app) : '') },
      { key: 'orig_pkts', label: '→ Pkts', cls: 'c-num', title: 'Packets from the originator', sort: (f) => f.orig_pkts, cell: (f) => count(f.orig_pkts) },
      { key: 'orig_bytes', label: '→ Bytes', cls: 'c-num', title: 'Bytes on the wire from the originator', sort: (f) => f.orig_bytes, cell: (f) => bytes(f.orig_bytes) },
      { key: 'resp_pkts', label: '← Pkts', cls: 'c-num', title: 'Packets from the responder', sort: (f) => f.resp_pkts, cell: (f) => count(f.resp_pkts) },
      { key: 'resp_bytes', label: '← Bytes', cls: 'c-num', title: 'Bytes on the wire from the responder', sort: (f) => f.resp_bytes, cell: (f) => bytes(f.resp_bytes) },
      { key: 'duration', label: 'Duration', cls: 'c-num', sort: (f) => f.last_ns - f.first_ns, cell: (f) => duration(ms(f.last_ns) - ms(f.first_ns)) },
      { key: 'state', label: 'State', cls: 'c-state', title: "Zeek's conn_state (the history on hover); a dot: still active", sort: (f) => f.conn_state, cell: stateCell },
      { key: 'info', label: 'Info', cls: 'c-info', sort: (f) => flowInfo(f), cell: (f) => h('span', { title: flowInfo(f) }, flowInfo(f)) },
    ], {
      sort: { column: 'start', direction: 'desc' },
      rowKey: (f) => f.uid,
      rowClass: (f) => (active(f) ? 'active' : 'ended'),
      emptyText: 'No conversation yet.',
    });
    this.#table.on('pick', onFlow);
    this.#table.on('address', onAddress);
    for (const type of ['input', 'search']) search.addEventListener(type, () => this.#draw());
    names.on('change', () => this.shown && this.#draw());
  }

  setFilters(filters) {
    this.#filters = flowFilters(filters);
    if (this.shown) this.refresh();
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
      const { flows, total } = await listFlows(this.#session, this.#filters);
      if (request !== this.#request) return;
      this.#flows = flows;
      this.total = total;
      this.#say('');
    } catch (err) {
      if (request !== this.#request) return;
      this.#say(err.status === 404
        ? 'This sensor does not keep conversations (no /api/flows).' : err.message, 'error');
    }
    this.#draw();
  }

  #matches(f, words) {
    if (words.length === 0) return true;
    const text = [
      this.#names.searchText(f.orig_ip), this.#names.searchText(f.resp_ip),
      f.orig_port, f.resp_port, f.transport, f.app, f.conn_state, flowInfo(f), f.sensor ?? '',
    ].join(' ').toLowerCase();
    return words.every((word) => text.includes(word));
  }

  #draw() {
    const words = this.#search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = this.#flows.filter((f) => this.#matches(f, words));
    const filtered = Object.keys(this.#filters).length > 0;
    this.#table.emptyText = words.length || filtered
      ? 'No conversation matches.' : 'No conversation yet.';
    this.#table.setItems(rows);
    const of = rows.length === this.#flows.length ? '' : ` of ${count(this.#flows.length)}`;
    const more = this.total > this.#flows.length ? ` (newest ${count(this.#flows.length)} of ${count(this.total)})` : '';
    this.#countEl.textContent = `${count(rows.length)}${of} shown${more}`;
  }

  #say(text, kind = '') {
    this.#message.textContent = text;
    this.#message.dataset.kind = kind;
    this.#message.hidden = !text;
  }
}
