// The pure parts of leireye-client.js, and its reconnect schedule with injected timers and a
// fake WebSocket. Run by tests/integration/test_js_client.py; prints `ok` when all pass.
import assert from 'node:assert/strict';
import {
  BACKOFF_MS, LeirEyeClient, ResumeCursor, backoffDelay, closeOutcome, httpBase, refreshDelay,
} from '../../leireye/web/static/leireye-client.js';
import { tcpFlags } from '../../leireye/web/static/app/format.js';

assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map((n) => backoffDelay(n)), [1000, 2000, 5000, 10000, 30000, 30000, 30000]);
assert.equal(refreshDelay(1000000, 0), 940000);
assert.equal(refreshDelay(10000, 0), 8000);
assert.equal(refreshDelay(5, 10), 0);
const cursor = new ResumeCursor();
assert.deepEqual([5, 6, 6, 4, 9].map((id) => cursor.accept(id)), [true, true, false, false, true]);
assert.equal(cursor.lastId, 9);
assert.equal(closeOutcome(4001), 'auth_failed');
assert.equal(closeOutcome(4003), 'renew');
assert.equal(closeOutcome(4008), 'refused');
assert.equal(closeOutcome(1006), 'reconnect');
assert.equal(httpBase('wss://s.example:8443/ws/capture?x=1'), 'https://s.example:8443');
assert.equal(tcpFlags(['ACK', 'RST']), 'RST, ACK');
assert.equal(tcpFlags(['CWR', 'ECE', 'SYN']), 'SYN, ECE, CWR');
assert.equal(tcpFlags([]), '');

// One fake server: the first connection authenticates, sends packets 1, 2, 2, 3 and dies (1006);
// the next three are refused; the fifth resumes and must ask for since=3.
const sockets = [];
class FakeWebSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.n = sockets.push(this);
    setImmediate(() => {
      if (this.n > 1 && this.n < 5) return this._close(1006);
      this.readyState = 1;
      this.onopen();
    });
  }
  send(text) {
    const message = JSON.parse(text);
    this.sent.push(message);
    const reply = (m) => setImmediate(() => this.onmessage({ data: JSON.stringify(m) }));
    if (message.type === 'auth') reply({ type: 'auth_success', user: { id: 1, username: 'a', role: 'ADMIN' }, limits: {}, expires_at: null });
    if (message.type === 'subscribe') {
      reply({ type: 'subscribed', channel: message.channel });
      if (this.n === 1) {
        reply({ type: 'packets', data: [1, 2].map((id) => ({ id })) });
        reply({ type: 'packet', data: { id: 2 } });
        reply({ type: 'dropped', reason: 'slow_consumer', count: 4, message: '...' });
        reply({ type: 'packet', data: { id: 7 } });
        setImmediate(() => setImmediate(() => setImmediate(() => setImmediate(() => setImmediate(() => this._close(1006))))));
      }
    }
  }
  close() { this._close(1000); }
  _close(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
}

const delays = [];
const never = 1e9;
const fetched = [];
const client = new LeirEyeClient('ws://sensor.test/ws/capture', {
  token: 't',
  WebSocket: FakeWebSocket,
  fetch: async (url, options) => {
    fetched.push({ url, options });
    return { json: async () => ({ ring: { last_id: 0 } }) };
  },
  pingIntervalMs: never,
  openTimeoutMs: never,
  setTimeout: (fn, ms) => { if (ms < never) { delays.push(ms); setImmediate(fn); } return {}; },
  clearTimeout: () => {},
});
const ids = [];
const gaps = [];
client.on('packet', (p) => ids.push(p.id));
client.on('gap', (g) => gaps.push(g));
await client.subscribePackets({ port: 53 });
await client.connect();
for (let i = 0; i < 1000 && sockets.length < 5; i++) await new Promise(setImmediate);
for (let i = 0; i < 20; i++) await new Promise(setImmediate);
client.close();
assert.deepEqual(ids, [1, 2, 7]);
assert.deepEqual(gaps, [{ reason: 'slow_consumer', count: 4, message: '...', after_id: 2 }]);
assert.deepEqual(delays, [1000, 2000, 5000, 10000]);
const resumed = sockets[4].sent.find((m) => m.type === 'subscribe');
assert.equal(resumed.since, 7);
assert.equal(sockets[0].sent.find((m) => m.type === 'subscribe').since, 0);
// The ring's position comes from /health, which shows it only with a token.
assert.deepEqual(fetched, [{ url: 'http://sensor.test/health', options: { headers: { Authorization: 'Bearer t' } } }]);
assert.equal(client.connections, 2);
assert.equal(BACKOFF_MS.length, 5);

// A refused change of filters: the server keeps streaming the old subscription, and so must the
// client (packets 11 and 12 arrive after the refusal).
class RefusingWebSocket {
  constructor() {
    this.readyState = 0;
    this.subscribes = 0;
    setImmediate(() => { this.readyState = 1; this.onopen(); });
  }
  send(text) {
    const message = JSON.parse(text);
    const reply = (m) => setImmediate(() => this.onmessage({ data: JSON.stringify(m) }));
    if (message.type === 'auth') reply({ type: 'auth_success', user: { id: 1, username: 'a', role: 'ADMIN' }, limits: {}, expires_at: null });
    if (message.type !== 'subscribe') return;
    this.subscribes += 1;
    if (this.subscribes === 1) {
      reply({ type: 'subscribed', channel: 'packets' });
      reply({ type: 'packet', data: { id: 10 } });
    } else {
      reply({ type: 'error', code: 'INVALID_FILTER', message: 'port: not a port', field: 'port' });
      reply({ type: 'packets', data: [{ id: 11 }, { id: 12 }] });
    }
  }
  close() { this.readyState = 3; }
}
const stay = new LeirEyeClient('ws://sensor.test/ws/capture', {
  token: 't', WebSocket: RefusingWebSocket, pingIntervalMs: never, openTimeoutMs: never,
  fetch: async () => ({ json: async () => ({ ring: { last_id: 0 } }) }),
});
const kept = [];
const refusals = [];
stay.on('packet', (p) => kept.push(p.id));
stay.on('error', (e) => refusals.push(e.field));
await stay.subscribePackets({ port: 53 });
await stay.connect();
for (let i = 0; i < 20 && !kept.length; i++) await new Promise(setImmediate);
await stay.subscribePackets({ port: 'x' });
for (let i = 0; i < 20 && kept.length < 3; i++) await new Promise(setImmediate);
stay.close();
assert.deepEqual(refusals, ['port']);
assert.deepEqual(kept, [10, 11, 12]);

// At a fleet central (JSON): a `sensor` filter, a name or a list, goes out as given, and each
// packet's `sensor` comes through.
for (const sensor of ['branch-7', ['branch-7', 'hq']]) {
  let central = null;
  class CentralWebSocket {
    constructor() {
      central = this;
      this.readyState = 0;
      this.sent = [];
      setImmediate(() => { this.readyState = 1; this.onopen(); });
    }
    send(text) {
      const message = JSON.parse(text);
      this.sent.push(message);
      const reply = (m) => setImmediate(() => this.onmessage({ data: JSON.stringify(m) }));
      if (message.type === 'auth') reply({ type: 'auth_success', user: { id: 1, username: 'a', role: 'ADMIN' }, limits: {}, expires_at: null });
      if (message.type !== 'subscribe') return;
      reply({ type: 'subscribed', channel: 'packets' });
      reply({ type: 'packets', data: [{ id: 3, vlan: null, sensor: 'branch-7' }, { id: 4, vlan: null, sensor: null }] });
      reply({ type: 'packet', data: { id: 5, vlan: null, sensor: 'hq' } });
    }
    close() { this.readyState = 3; }
  }
  const fleet = new LeirEyeClient('ws://central.test/ws/capture', {
    token: 't', WebSocket: CentralWebSocket, pingIntervalMs: never, openTimeoutMs: never,
  });
  const seen = [];
  fleet.on('packet', (p) => seen.push(p));
  await fleet.subscribePackets({ sensor, port: 53 }, { since: 2 });
  await fleet.connect();
  for (let i = 0; i < 20 && seen.length < 3; i++) await new Promise(setImmediate);
  fleet.close();
  assert.deepEqual(central.sent.find((m) => m.type === 'subscribe').filters, { sensor, port: 53 });
  assert.deepEqual(seen.map((p) => p.sensor), ['branch-7', null, 'hq']);
}
console.log('ok');
