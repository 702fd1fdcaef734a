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

/** The one value of msgpack bytes (a Uint8Array): maps as objects without a prototype, `bin` as Uint8Array
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
    const out = Object.create(null); // (a key "__proto__" is a key like any other)
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

/** Each column's item size and typed array (little-endian; `id` and `timestamp_ms` as two
 * 32-bit halves each, read into Numbers). */
const COLUMNS = {
  id: [8, Uint32Array], timestamp_ms: [8, Uint32Array], src_port: [4, Int32Array],
  dst_port: [4, Int32Array], length: [4, Uint32Array], ip_version: [1, Uint8Array],
  vlan: [4, Int32Array], src_ip: [4, Uint32Array], dst_ip: [4, Uint32Array],
  protocol: [4, Uint32Array], flags: [4, Uint32Array], info: [4, Uint32Array],
  app: [4, Uint32Array], sensor: [4, Uint32Array],
};
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const TABLES = {
  src_ip: 'addresses', dst_ip: 'addresses', protocol: 'protocols', flags: 'flag_sets',
  info: 'infos', app: 'apps', sensor: 'sensors',
};

/** One binary frame (ArrayBuffer, a typed array or a Node Buffer) as the `packet_columns`
 * message, each column checked for its length and each index for its table. */
export function decodeColumns(frame) {
  // (a plain Uint8Array even over a Node Buffer, whose slice() would not copy)
  const bytes = ArrayBuffer.isView(frame)
    ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength) : new Uint8Array(frame);
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
  if (!message.flag_sets.every(Array.isArray)) throw new ColumnsError('flag_sets: not lists');
  return message;
}

/** A column as a typed array over an aligned copy of its bytes (msgpack places them anywhere). */
function column(message, name) {
  const [size, Type] = COLUMNS[name];
  const bytes = message[name];
  if (LITTLE || size === 1) return new Type(Uint8Array.prototype.slice.call(bytes).buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Type(bytes.byteLength / Type.BYTES_PER_ELEMENT);
  const get = Type === Int32Array ? (at) => view.getInt32(at, true) : (at) => view.getUint32(at, true);
  for (let i = 0; i < out.length; i++) out[i] = get(i * 4);
  return out;
}

/** A 64-bit column as Numbers (exact up to 2**53, as JSON.parse gives them past it). */
function wide(message, name, signed) {
  const halves = column(message, name);
  const out = new Array(message.count);
  for (let i = 0; i < out.length; i++) {
    const hi = halves[2 * i + 1];
    out[i] = (signed ? hi | 0 : hi) * 2 ** 32 + halves[2 * i];
  }
  return out;
}

/** `timestamp`: the ISO-8601 text of each Unix millisecond, each second's text made once. */
function stamps(ms) {
  const seconds = new Map();
  return ms.map((t) => {
    const second = Math.floor(t / 1000);
    let text = seconds.get(second);
    if (text === undefined) {
      text = new Date(second * 1000).toISOString().slice(0, -5);
      seconds.set(second, text);
    }
    return `${text}.${String(t - second * 1000).padStart(3, '0')}Z`;
  });
}

function texts(message, name) {
  const table = message[TABLES[name]];
  const index = column(message, name);
  const out = new Array(index.length);
  for (let i = 0; i < index.length; i++) {
    if (index[i] >= table.length) throw new ColumnsError(`${name}: index ${index[i]} past its table`);
    out[i] = table[index[i]];
  }
  return out;
}

const nullable = (values, none) => Array.from(values, (v) => (v === none ? null : v));

/** The batch as one object per packet, field for field what a JSON `packets` batch gives. */
export function packetsOf(message) {
  const id = wide(message, 'id', false);
  const timestamp = stamps(wide(message, 'timestamp_ms', true));
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
      timestamp: timestamp[i],
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
