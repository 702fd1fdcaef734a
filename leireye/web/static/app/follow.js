// Follow Stream (GET /api/stream, ANALYST and ADMIN): one TCP or UDP conversation's payload,
// both directions, as Wireshark's Follow TCP Stream shows it: client and server in two colours,
// gaps marked, ASCII / hex dump / raw hex views, one direction or both, and a download.

import { $, h } from './dom.js';
import { queryString } from './api.js';
import { count } from './format.js';

const VIEWS = ['ascii', 'hex', 'raw'];

export function followable(packet) {
  return (packet.protocol === 'TCP' || packet.protocol === 'UDP')
    && packet.src_port !== null && packet.src_port !== undefined
    && packet.dst_port !== null && packet.dst_port !== undefined;
}

function endpoint(ip, port) {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function decode(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function ascii(bytes) {
  let out = '';
  for (const b of bytes) {
    out += (b >= 0x20 && b < 0x7f) || b === 0x09 || b === 0x0a || b === 0x0d ? String.fromCharCode(b) : '.';
  }
  return out;
}

function hexDump(bytes, start) {
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const chunk = bytes.subarray(off, off + 16);
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, '0'));
    const left = hex.slice(0, 8).join(' ');
    const right = hex.slice(8).join(' ');
    const text = Array.from(chunk, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${(start + off).toString(16).padStart(8, '0')}  ${`${left}  ${right}`.padEnd(49)} ${text}`);
  }
  return `${lines.join('\n')}\n`;
}

function rawHex(bytes) {
  return `${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}\n`;
}

export class FollowDialog {
  #dialog = $('#follow-dialog');
  #title = $('#follow-title');
  #summary = $('#follow-summary');
  #body = $('#follow-body');
  #direction = $('#follow-direction');
  #session;
  #stream = null;
  #query = null;
  #view = 'ascii';
  #request = 0;

  constructor(session) {
    this.#session = session;
    $('#follow-close').addEventListener('click', () => this.#dialog.close());
    $('#follow-download').addEventListener('click', () => this.#download());
    this.#direction.addEventListener('change', () => this.#render());
    for (const button of this.#dialog.querySelectorAll('[data-view]')) {
      button.addEventListener('click', () => {
        this.#view = button.dataset.view;
        this.#render();
      });
    }
  }

  async open(packet) {
    const request = ++this.#request;
    const transport = packet.protocol.toLowerCase();
    this.#query = {
      transport, a: endpoint(packet.src_ip, packet.src_port), b: endpoint(packet.dst_ip, packet.dst_port),
    };
    this.#stream = null;
    this.#title.textContent = `Follow ${packet.protocol} Stream`;
    this.#summary.replaceChildren('Loading…');
    this.#body.replaceChildren();
    if (!this.#dialog.open) this.#dialog.showModal();
    let stream;
    try {
      stream = await this.#session.request('GET', `/api/stream${queryString(this.#query)}`);
    } catch (err) {
      if (request !== this.#request) return;
      this.#summary.replaceChildren(h('span', { class: 'error', id: 'follow-error' }, err.message));
      return;
    }
    if (request !== this.#request) return;
    this.#stream = {
      ...stream,
      segments: stream.segments.map((s) => ({ ...s, bytes: s.data === undefined ? null : decode(s.data) })),
    };
    this.#render();
  }

  #render() {
    for (const button of this.#dialog.querySelectorAll('[data-view]')) {
      button.setAttribute('aria-pressed', String(button.dataset.view === this.#view));
    }
    const st = this.#stream;
    if (st === null) return;
    const client = endpoint(st.client.ip, st.client.port);
    const server = endpoint(st.server.ip, st.server.port);
    this.#title.textContent = `Follow ${st.transport} Stream · ${client} ⇄ ${server}`;
    const notes = [
      h('span', { class: 'seg-client' }, `client ${client}: ${count(st.client_bytes)} B`),
      h('span', { class: 'seg-server' }, `server ${server}: ${count(st.server_bytes)} B`),
      `${st.frames} frames from the ${st.source}`,
    ];
    if (st.gap_bytes) notes.push(h('span', { class: 'seg-gap' }, `${count(st.gap_bytes)} B missing`));
    if (st.retransmitted_bytes) notes.push(`${count(st.retransmitted_bytes)} B retransmitted`);
    if (st.conflicting_bytes) notes.push(`${count(st.conflicting_bytes)} B differed in a retransmission (first copy kept)`);
    if (st.truncated) notes.push(h('span', { class: 'warn' }, `truncated at ${count(st.max_bytes)} B`));
    if (st.incomplete) notes.push(h('span', { class: 'warn', id: 'follow-incomplete' }, st.incomplete));
    this.#summary.replaceChildren(...notes.flatMap((n, i) => (i ? [' · ', n] : [n])));
    const only = this.#direction.value;
    const parts = [];
    for (const s of st.segments) {
      if (only !== 'both' && s.direction !== only) continue;
      if (s.bytes === null) {
        parts.push(h('span', { class: 'seg-gap' }, `[${count(s.gap)} bytes missing]\n`));
        continue;
      }
      let text;
      if (this.#view === 'hex') text = hexDump(s.bytes, s.offset);
      else if (this.#view === 'raw') text = rawHex(s.bytes);
      else text = ascii(s.bytes);
      parts.push(h('span', { class: `seg-${s.direction}`, title: `${s.direction} · offset ${s.offset} · ${s.timestamp}` }, text));
    }
    if (parts.length === 0) parts.push(h('span', { class: 'muted' }, 'No payload.'));
    this.#body.replaceChildren(...parts);
  }

  async #download() {
    if (this.#query === null) return;
    const direction = this.#direction.value;
    const path = `/api/stream${queryString({ ...this.#query, format: 'raw', direction })}`;
    let response;
    try {
      response = await this.#session.request('GET', path, { raw: true });
    } catch (err) {
      this.#summary.replaceChildren(h('span', { class: 'error', id: 'follow-error' }, err.message));
      return;
    }
    const blob = await response.blob();
    const disposition = response.headers.get('Content-Disposition') ?? '';
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? 'stream.bin';
    const url = URL.createObjectURL(blob);
    const link = h('a', { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}
