// Reading `packet_columns` (the binary batch format, `options.format: "columns"`) in the
// browser or Node, without a dependency: the frame is one msgpack map (docs/websocket.md), its
// number columns raw little-endian arrays, its text columns indexes into small tables.
// `packetsOf` makes of it the very objects a JSON `packets` batch gives: the same fields, in the
// same order, with the same types (nulls, `timestamp` as ISO-8601 text, `sensor` only when the
// frame carries it: at a fleet central), as leireye/client/columns.py does for Python.

/** A frame that is not a `packet_columns` message (malformed, truncated, or another type). */
export class ColumnsError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ColumnsError';
  }
}

const text = new TextDecoder('utf-8');

/** The one value of msgpack bytes (a Uint8Array): maps as plain objects, `bin` as Uint8Array
 * views over `bytes` (no copy), `str` as strings, integers as Numbers. */
export function unpack(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > bytes.byteLength) throw new ColumnsError(`truncated at byte ${at}`);
    const start = at;
    at += n;
    return start;
  };
  const str = (n) => text.decode(bytes.subarray(need(n), at));
  const bin = (n) => bytes.subarray(need(n), at);
  const array = (n) => Array.from({ length: n }, value);
  const map = (n) => {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value();
      if (typeof key !== 'string') throw new ColumnsError('a map key that is not a text');
      out[key] = value();
    }
    return out;
  };
  const u64 = (signed) => {
    const start = need(8);
    const hi = signed ? view.getInt32(start) : view.getUint32(start);
    return hi * 2 ** 32 + view.getUint32(start + 4);
  };
  function value() {
    const b = view.getUint8(need(1));
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(view.getUint8(need(1)));
      case 0xc5: return bin(view.getUint16(need(2)));
      case 0xc6: return bin(view.getUint32(need(4)));
      case 0xca: return view.getFloat32(need(4));
      case 0xcb: return view.getFloat64(need(8));
      case 0xcc: return view.getUint8(need(1));
      case 0xcd: return view.getUint16(need(2));
      case 0xce: return view.getUint32(need(4));
      case 0xcf: return u64(false);
      case 0xd0: return view.getInt8(need(1));
      case 0xd1: return view.getInt16(need(2));
      case 0xd2: return view.getInt32(need(4));
      case 0xd3: return u64(true);
      case 0xd9: return str(view.getUint8(need(1)));
      case 0xda: return str(view.getUint16(need(2)));
      case 0xdb: return str(view.getUint32(need(4)));
      case 0xdc: return array(view.getUint16(need(2)));
      case 0xdd: return array(view.getUint32(need(4)));
      case 0xde: return map(view.getUint16(need(2)));
      case 0xdf: return map(view.getUint32(need(4)));
      default: throw new ColumnsError(`msgpack type 0x${b.toString(16)} is not used here`);
    }
  }
  const out = value();
  if (at !== bytes.byteLength) throw new ColumnsError(`${bytes.byteLength - at} bytes after the message`);
  return out;
}

/** Each column's item size and reader (DataView getters: little-endian at any alignment). */
const COLUMNS = {
  id: [8, (v, at) => v.getUint32(at + 4, true) * 2 ** 32 + v.getUint32(at, true)],
  timestamp_ms: [8, (v, at) => v.getInt32(at + 4, true) * 2 ** 32 + v.getUint32(at, true)],
  src_port: [4, (v, at) => v.getInt32(at, true)],
  dst_port: [4, (v, at) => v.getInt32(at, true)],
  length: [4, (v, at) => v.getUint32(at, true)],
  ip_version: [1, (v, at) => v.getUint8(at)],
  vlan: [4, (v, at) => v.getInt32(at, true)],
  src_ip: [4, (v, at) => v.getUint32(at, true)],
  dst_ip: [4, (v, at) => v.getUint32(at, true)],
  protocol: [4, (v, at) => v.getUint32(at, true)],
  flags: [4, (v, at) => v.getUint32(at, true)],
  info: [4, (v, at) => v.getUint32(at, true)],
  app: [4, (v, at) => v.getUint32(at, true)],
  sensor: [4, (v, at) => v.getUint32(at, true)],
};
const TABLES = {
  src_ip: 'addresses', dst_ip: 'addresses', protocol: 'protocols', flags: 'flag_sets',
  info: 'infos', app: 'apps', sensor: 'sensors',
};

/** One binary frame (ArrayBuffer, a typed array or a Node Buffer) as the `packet_columns`
 * message, each column checked for its length and each index for its table. */
export function decodeColumns(frame) {
  const bytes = frame instanceof Uint8Array ? frame
    : ArrayBuffer.isView(frame) ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength)
      : new Uint8Array(frame);
  let message;
  try {
    message = unpack(bytes);
  } catch (error) {
    if (error instanceof ColumnsError) throw error;
    throw new ColumnsError(`not msgpack: ${error.message}`);
  }
  if (message === null || typeof message !== 'object' || message.type !== 'packet_columns') {
    throw new ColumnsError('not a packet_columns message');
  }
  const count = message.count;
  if (!Number.isInteger(count) || count < 0) throw new ColumnsError('count: not a count');
  for (const [name, [size]] of Object.entries(COLUMNS)) {
    const column = message[name];
    if (name === 'sensor' && column === undefined) continue;
    if (!(column instanceof Uint8Array) || column.byteLength !== count * size) {
      throw new ColumnsError(`${name}: not ${count} items of ${size} bytes`);
    }
    const table = TABLES[name] && message[TABLES[name]];
    if (TABLES[name] && !Array.isArray(table)) throw new ColumnsError(`${TABLES[name]}: not a list`);
  }
  return message;
}

function column(message, name) {
  const [size, read] = COLUMNS[name];
  const bytes = message[name];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Array(message.count);
  for (let i = 0, at = 0; i < out.length; i++, at += size) out[i] = read(view, at);
  return out;
}

function texts(message, name) {
  const table = message[TABLES[name]];
  return column(message, name).map((i) => {
    if (i >= table.length) throw new ColumnsError(`${name}: index ${i} past its table`);
    return table[i];
  });
}

const nullable = (values, none) => values.map((v) => (v === none ? null : v));

/** The batch as one object per packet, field for field what a JSON `packets` batch gives. */
export function packetsOf(message) {
  const id = column(message, 'id');
  const ms = column(message, 'timestamp_ms');
  const srcIp = texts(message, 'src_ip');
  const dstIp = texts(message, 'dst_ip');
  const srcPort = nullable(column(message, 'src_port'), -1);
  const dstPort = nullable(column(message, 'dst_port'), -1);
  const protocol = texts(message, 'protocol');
  const length = column(message, 'length');
  const flags = texts(message, 'flags');
  const info = texts(message, 'info');
  const app = texts(message, 'app');
  const ipVersion = nullable(column(message, 'ip_version'), 0);
  const vlan = nullable(column(message, 'vlan'), -1);
  const sensor = message.sensor === undefined ? null : texts(message, 'sensor');
  const out = new Array(message.count);
  for (let i = 0; i < out.length; i++) {
    const p = {
      id: id[i],
      timestamp: new Date(ms[i]).toISOString(),
      src_ip: srcIp[i],
      dst_ip: dstIp[i],
      src_port: srcPort[i],
      dst_port: dstPort[i],
      protocol: protocol[i],
      length: length[i],
      flags: [...flags[i]],
      info: info[i],
      app: app[i],
      ip_version: ipVersion[i],
      vlan: vlan[i],
    };
    if (sensor) p.sensor = sensor[i];
    out[i] = p;
  }
  return out;
}
