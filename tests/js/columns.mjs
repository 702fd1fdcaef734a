// Used by tests/integration/test_js_client.py: leireye-columns.js over frames made by the
// server's own encoders. FIXTURE (JSON): [{ frame: base64 packet_columns, packets: [JSON text of
// each packet's data, as the JSON path sends it] }, ...], `bad`: frames it must refuse, and
// `client`: the batches to stream through LeirEyeClient (a central's, with `sensor`).
// Prints `ok` when every frame decodes to exactly the JSON packets (fields, order, types).
//   node tests/js/columns.mjs FIXTURE
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { LeirEyeClient } from '../../leireye/web/static/leireye-client.js';
import { ColumnsError, decodeColumns, packetsOf } from '../../leireye/web/static/leireye-columns.js';

const { batches, bad, client } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let packets = 0;
for (const [n, { frame, packets: expected }] of batches.entries()) {
  const buffer = Buffer.from(frame, 'base64');
  // An ArrayBuffer as a browser gives it, and a view at an odd offset (DataView reads unaligned).
  const shifted = new Uint8Array(buffer.length + 1);
  shifted.set(buffer, 1);
  const fromBuffer = packetsOf(decodeColumns(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.length)));
  const fromView = packetsOf(decodeColumns(shifted.subarray(1)));
  const want = `[${expected.join(',')}]`;
  assert.equal(JSON.stringify(fromBuffer), JSON.stringify(JSON.parse(want)), `batch ${n}`);
  assert.deepEqual(fromView, fromBuffer);
  packets += fromBuffer.length;
}
for (const frame of bad) {
  assert.throws(() => packetsOf(decodeColumns(Buffer.from(frame, 'base64'))), ColumnsError, frame);
}
assert.ok(packets > 0);

// Through the client: a central's batches (FIXTURE `client`: indexes into `batches`) with a
// `sensor` filter passed through as given, a repeated batch (dropped by id), a `dropped` notice
// between batches (a gap after the last id delivered), and a frame that is not ours (counted).
const frames = client.map((i) => Buffer.from(batches[i].frame, 'base64'));
const expected = client.flatMap((i) => batches[i].packets.map((t) => JSON.parse(t)));
const asArrayBuffer = (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
let socket = null;
class FakeWebSocket {
  constructor() {
    socket = this;
    this.readyState = 0;
    this.sent = [];
    setImmediate(() => { this.readyState = 1; this.onopen(); });
  }
  send(text) {
    const message = JSON.parse(text);
    this.sent.push(message);
    const reply = (data) => setImmediate(() => this.onmessage({ data }));
    if (message.type === 'auth') reply(JSON.stringify({ type: 'auth_success', user: { id: 1, username: 'a', role: 'ADMIN' }, limits: {}, expires_at: null }));
    if (message.type !== 'subscribe') return;
    reply(JSON.stringify({ type: 'subscribed', channel: 'packets', options: { batch: true, format: 'columns' } }));
    reply(asArrayBuffer(frames[0]));
    reply(frames[0]); // a Node Buffer (the ws package's default), and a repeat
    reply(JSON.stringify({ type: 'dropped', reason: 'slow_consumer', count: 3, message: '...' }));
    reply(new Uint8Array([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xc0])); // {"type": null}
    for (const frame of frames.slice(1)) reply(asArrayBuffer(frame));
  }
  close() { this.readyState = 3; }
}
const received = [];
const gaps = [];
const leir = new LeirEyeClient('ws://central.test/ws/capture', {
  token: 't', WebSocket: FakeWebSocket, pingIntervalMs: 1e9, openTimeoutMs: 1e9,
  fetch: async () => ({ json: async () => ({ ring: { last_id: 41 } }) }),
});
leir.on('packet', (p) => received.push(p));
leir.on('gap', (g) => gaps.push(g));
const warn = console.warn;
const warnings = [];
console.warn = (text) => warnings.push(text);
const filters = { sensor: ['hq', 'édge'], protocol: 'UDP' };
await leir.subscribePackets(filters, { format: 'columns' });
await leir.connect();
for (let i = 0; i < 100 && received.length < expected.length; i++) await new Promise(setImmediate);
leir.close();
console.warn = warn;
const subscribe = socket.sent.find((m) => m.type === 'subscribe');
assert.deepEqual(subscribe, { type: 'subscribe', channel: 'packets', filters, options: { batch: true, format: 'columns' }, since: 41 });
assert.equal(JSON.stringify(received), JSON.stringify(expected));
assert.ok(received.every((p) => 'sensor' in p));
const firstBatch = batches[client[0]].packets.length;
assert.deepEqual(gaps, [{ reason: 'slow_consumer', count: 3, message: '...', after_id: expected[firstBatch - 1].id }]);
assert.equal(leir.skippedFrames, 1);
assert.equal(warnings.length, 1);
await assert.rejects(leir.subscribePackets({}, { format: 'msgpack', since: 0 }), TypeError);
console.log('ok');
