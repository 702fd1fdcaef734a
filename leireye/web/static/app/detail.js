// The packet detail pane: the layers as a collapsible tree and the stored bytes as a hex dump
// (GET /api/capture/packets/{id}, ANALYST and ADMIN). Pointing at a layer lights up its bytes.

import { h } from './dom.js';
import { count, dateTime } from './format.js';
import { hasRole } from './api.js';
import { protocolClass, protocolLabel } from './table.js';
import { FollowDialog, followable } from './follow.js';

export class DetailPane {
  #root;
  #title;
  #body;
  #session;
  #request = 0;
  #hexBytes = [];
  #follow = null;
  #packet = null;
  packetId = null;

  constructor({ root, session, onClose }) {
    this.#root = root;
    this.#title = root.querySelector('#detail-title');
    this.#body = root.querySelector('#detail-body');
    this.#session = session;
    root.querySelector('#detail-close').addEventListener('click', onClose);
  }

  get open() {
    return !this.#root.hidden;
  }

  close() {
    this.#request += 1;
    this.packetId = null;
    this.#root.hidden = true;
  }

  async show(packet) {
    const request = ++this.#request;
    this.packetId = packet.id;
    this.#packet = packet;
    this.#root.hidden = false;
    this.#title.replaceChildren(...summaryLine(packet).filter(Boolean));
    const allowed = hasRole(this.#session.user, 'ANALYST');
    this.#root.classList.toggle('compact', !allowed);
    if (!allowed) {
      const role = this.#session.user?.role ?? 'unknown';
      this.#body.replaceChildren(
        h('div', { class: 'detail-note', id: 'detail-forbidden' },
          h('strong', {}, 'Packet details need the ANALYST role.'),
          ` You are signed in as ${role}: the table shows every packet, while its layers and `,
          'bytes are for analysts and administrators.'),
      );
      return;
    }
    this.#body.replaceChildren(h('div', { class: 'detail-note muted' }, 'Loading…'));
    let detail;
    try {
      detail = await this.#session.request('GET', `/api/capture/packets/${packet.id}`);
    } catch (err) {
      if (request !== this.#request) return;
      this.#body.replaceChildren(h('div', { class: 'detail-note error' }, err.message));
      return;
    }
    if (request !== this.#request) return;
    this.#render(detail);
  }

  #render(detail) {
    const layers = h('div', { class: 'layers', id: 'detail-layers' });
    for (const layer of detail.layers ?? []) layers.append(this.#layer(layer));
    const meta = h('div', { class: 'detail-meta muted' },
      `${dateTime(detail.timestamp)} · ${count(detail.wire_length)} bytes on the wire`,
      detail.truncated ? ` · ${count(detail.stored_length)} stored` : '',
      h('span', { class: 'detail-source', id: 'detail-source', 'data-source': detail.source ?? '' },
        detail.source === 'store' ? ' · whole, from the packet store' : ' · from the ring'),
      this.#followButton());
    const hex = this.#hex(detail.raw_hex ?? '');
    this.#body.replaceChildren(
      h('div', { class: 'detail-tree' }, meta, layers),
      hex,
    );
  }

  #followButton() {
    const packet = this.#packet;
    if (packet === null || !followable(packet)) return null;
    const open = () => {
      this.#follow ??= new FollowDialog(this.#session);
      this.#follow.open(packet);
    };
    return h('button', { type: 'button', id: 'detail-follow', class: 'ghost', onclick: open,
      title: 'Reassemble this conversation (GET /api/stream)' }, `Follow ${packet.protocol} Stream`);
  }

  #layer(layer) {
    const end = layer.offset + layer.length;
    const summary = h('summary', {},
      h('span', { class: 'layer-name' }, layer.layer),
      h('span', { class: 'layer-range muted' }, `${layer.offset}–${end} · ${layer.length} B`));
    const node = h('details', { class: 'layer', open: true }, summary, fieldList(layer.fields));
    const light = (on) => this.#highlight(on ? layer.offset : 0, on ? end : 0);
    summary.addEventListener('mouseenter', () => light(true));
    summary.addEventListener('mouseleave', () => light(false));
    return node;
  }

  #hex(rawHex) {
    const bytes = [];
    for (let i = 0; i + 1 < rawHex.length; i += 2) bytes.push(parseInt(rawHex.slice(i, i + 2), 16));
    const lines = h('div', { class: 'hex', id: 'detail-hex' });
    this.#hexBytes = [];
    for (let offset = 0; offset < bytes.length; offset += 16) {
      const hexCells = [];
      const textCells = [];
      for (let j = offset; j < Math.min(offset + 16, bytes.length); j += 1) {
        const b = bytes[j];
        const cell = h('span', { class: j % 16 === 7 ? 'b gap' : 'b' }, b.toString(16).padStart(2, '0'));
        const char = h('span', { class: 'a' }, b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.');
        this.#hexBytes.push([cell, char]);
        hexCells.push(cell);
        textCells.push(char);
      }
      lines.append(h('div', { class: 'hex-line' },
        h('span', { class: 'hex-off' }, offset.toString(16).padStart(4, '0')),
        h('span', { class: 'hex-bytes' }, hexCells),
        h('span', { class: 'hex-text' }, textCells)));
    }
    if (bytes.length === 0) lines.append(h('div', { class: 'muted' }, 'No bytes stored.'));
    return lines;
  }

  #highlight(start, end) {
    this.#hexBytes.forEach(([cell, char], i) => {
      const on = i >= start && i < end;
      cell.classList.toggle('lit', on);
      char.classList.toggle('lit', on);
    });
  }
}

function summaryLine(p) {
  const label = protocolLabel(p);
  // Each end an address element (main.js names it and links it to the host page).
  const ends = (ip, port) => (ip
    ? h('span', { class: 'addr', dataset: { ip, ...(port === null || port === undefined ? {} : { port }) } },
      port === null || port === undefined ? ip : `${ip}:${port}`)
    : '–');
  return [
    h('span', { class: 'mono muted' }, `#${p.id}`),
    p.sensor ? h('span', { class: 'detail-sensor', id: 'detail-sensor', title: 'The sensor that captured it' }, p.sensor) : null,
    h('span', { class: `proto-tag ${protocolClass(label)}` }, label),
    h('span', { class: 'mono' }, ends(p.src_ip, p.src_port), ' → ', ends(p.dst_ip, p.dst_port)),
    h('span', { class: 'muted' }, `${p.length} B`),
    h('span', { class: 'detail-info' }, p.info ?? ''),
  ];
}

function fieldList(fields) {
  const list = h('dl', { class: 'fields' });
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value !== null && typeof value === 'object' && !isFlat(value)) {
      list.append(h('dt', {}, key), h('dd', {}, nested(value)));
    } else {
      list.append(h('dt', {}, key), h('dd', { class: 'mono' }, flat(value)));
    }
  }
  return list;
}

function isFlat(value) {
  return Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object');
}

function flat(value) {
  if (Array.isArray(value)) return value.join(', ') || '—';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

function nested(value) {
  if (Array.isArray(value)) {
    const wrap = h('div', { class: 'nested' });
    value.forEach((item, i) => {
      const body = item !== null && typeof item === 'object' ? fieldList(item) : flat(item);
      wrap.append(h('details', { class: 'sub' }, h('summary', {}, `[${i}]`), body));
    });
    return wrap;
  }
  return h('details', { class: 'sub' }, h('summary', {}, `${Object.keys(value).length} fields`),
    fieldList(value));
}
