// Used by tests/integration/test_js_client.py: stream packets to one UDP port through
// leireye-client.js and print them as JSON lines.
//   node [--experimental-websocket] tests/js/stream.mjs URL TOKEN PORT COUNT [FORMAT]
// FORMAT: 'json' (the default) or 'columns' (binary batches).
// Prints `options {...}` (the server's echo) and `ready` once subscribed, one JSON line per
// packet, `gap {...}` per gap, then `done connections=N`; on a fatal error `error KIND MESSAGE`
// and exit code 1.
import { LeirEyeClient } from '../../leireye/web/static/leireye-client.js';

const [url, token, port, count, format = 'json'] = process.argv.slice(2);
const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;
const client = new LeirEyeClient(url, { token, WebSocket, backoff: [50, 100, 200, 500] });
let seen = 0;
client.on('subscribed', (m) => {
  if (m.channel === 'packets') console.log(`options ${JSON.stringify(m.options)}\nready`);
});
client.on('gap', (g) => console.log(`gap ${JSON.stringify(g)}`));
client.on('error', (e) => { console.log(`error ${e.kind} ${e.message}`); process.exit(1); });
client.on('packet', (p) => {
  if (seen === Number(count)) return; // (closing: the rest is not asked for)
  console.log(JSON.stringify(p));
  if (++seen === Number(count)) {
    client.close();
    // Exit once stdout has taken everything: a pipe the reader is slow on queues the writes,
    // and process.exit() would drop what is queued.
    process.stdout.write(`done connections=${client.connections}\n`, () => process.exit(0));
  }
});
await client.subscribePackets({ port: Number(port) }, { format });
await client.connect().catch(() => {});
