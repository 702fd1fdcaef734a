// Run by benchmarks/bench_js_decode.py: packets per second of the JS client's two decodings.
//   node benchmarks/js_decode.mjs BATCHES.json REPEAT
import { readFileSync } from 'node:fs';
import { decodeColumns, packetsOf } from '../leireye/web/static/leireye-columns.js';

const [path, repeat = '5'] = process.argv.slice(2);
const { json, columns } = JSON.parse(readFileSync(path, 'utf8'));
const frames = columns.map((f) => {
  const b = Buffer.from(f, 'base64');
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length); // as a browser's binaryType
});

function best(decode) {
  let fastest = Infinity;
  let packets = 0;
  for (let i = 0; i < Number(repeat); i++) {
    const start = process.hrtime.bigint();
    packets = decode();
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - start) / 1e9);
  }
  return { packets, rate: packets / fastest };
}

const asJson = best(() => json.reduce((n, text) => n + JSON.parse(text).data.length, 0));
const asColumns = best(() => frames.reduce((n, f) => n + packetsOf(decodeColumns(f)).length, 0));
if (asJson.packets !== asColumns.packets) throw new Error(`${asJson.packets} != ${asColumns.packets}`);
const size = (total) => (total / asJson.packets).toFixed(0);
const jsonBytes = json.reduce((n, t) => n + Buffer.byteLength(t), 0);
const columnBytes = frames.reduce((n, f) => n + f.byteLength, 0);
console.log(`node ${process.version}, ${asJson.packets} packets, best of ${repeat}`);
console.log(`  json     ${(asJson.rate / 1e6).toFixed(2)} M packets/s  ${size(jsonBytes)} B/packet`);
console.log(`  columns  ${(asColumns.rate / 1e6).toFixed(2)} M packets/s  ${size(columnBytes)} B/packet`);
console.log(`  columns/json rate: ${(asColumns.rate / asJson.rate).toFixed(2)}`);
