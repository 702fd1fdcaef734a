// Used by tests/integration/test_js_client.py: stream packets to one UDP port through
// leireye-client.js and print them as JSON lines.
//   node [--experimental-websocket] tests/js/stream.mjs URL TOKEN PORT COUNT
// Prints `ready` once subscribed, one JSON line per packet, `gap {...}` per gap, then
// `done connections=N`; on a fatal error `error KIND MESSAGE` and exit code 1.
import { LeirEyeClient } from '../../leireye/web/static/leireye-client.js';

const [url, token, port, count] = process.argv.slice(2);
const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;
const client = new LeirEyeClient(url, { token, WebSocket, backoff: [50, 100, 200, 500] });
let seen = 0;
client.on('subscribed', (m) => { if (m.channel === 'packets') console.log('ready'); });
client.on('gap', (g) => console.log(`gap ${JSON.stringify(g)}`));
client.on('error', (e) => { console.log(`error ${e.kind} ${e.message}`); process.exit(1); });
client.on('packet', (p) => {
  console.log(JSON.stringify(p));
  if (++seen === Number(count)) {
    console.log(`done connections=${client.connections}`);
    client.close();
    process.exit(0);
  }
});
await client.subscribePackets({ port: Number(port) });
await client.connect().catch(() => {});
