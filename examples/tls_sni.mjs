#!/usr/bin/env node
// Tail the TLS SNI names seen by a LeirEye sensor (one line per ClientHello).
//
//   export LEIREYE_TOKEN=$(leireye token --user admin)
//   node --experimental-websocket examples/tls_sni.mjs ws://127.0.0.1:8000/ws/capture
//   (Node 22+: no flag needed; or `npm install ws` and it is used when there is no WebSocket)
//
// Prints `10:30:01.123 192.168.1.100 -> example.org`; reconnects and resumes on its own. On
// stderr: `# watching TLS on URL` whenever the sensor confirms the subscription (from then on,
// every ClientHello is seen).
import { LeirEyeClient } from '../leireye/web/static/leireye-client.js';

const url = process.argv[2] ?? 'ws://127.0.0.1:8000/ws/capture';
const token = process.env.LEIREYE_TOKEN;
if (!token) {
  console.error('set LEIREYE_TOKEN (leireye token --user admin)');
  process.exit(2);
}
const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;
const client = new LeirEyeClient(url, { token, WebSocket });
client.on('gap', (g) => console.error(`# ${g.count ?? 'some'} packets missed (${g.reason})`));
client.on('error', (e) => { console.error(`leireye: ${e.message}`); process.exit(1); });
client.on('subscribed', (m) => { if (m.channel === 'packets') console.error(`# watching TLS on ${url}`); });
client.on('packet', (p) => {
  const sni = /SNI=(\S+)/.exec(p.info);
  if (sni) console.log(`${p.timestamp.slice(11, 23)} ${p.src_ip} -> ${sni[1]}`);
});
await client.subscribePackets({ protocol: 'TLS' });
await client.connect();
process.on('SIGINT', () => { client.close(); process.exit(0); });
