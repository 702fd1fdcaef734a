// Number, byte and time formatting for a console read at a glance.

const COUNT = new Intl.NumberFormat('en-US');

export function count(n) {
  return COUNT.format(Math.round(n ?? 0));
}

// 1234 -> "1.2k", 2_500_000 -> "2.5M"
export function compact(n) {
  const v = Math.abs(n ?? 0);
  if (v < 1000) return String(Math.round(n ?? 0));
  const units = ['k', 'M', 'G', 'T'];
  let value = v;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = value < 10 ? 1 : 0;
  return `${Math.sign(n) < 0 ? '-' : ''}${value.toFixed(digits)}${units[unit]}`;
}

// Bytes in binary units: 1536 -> "1.5 KiB"
export function bytes(n) {
  const v = Math.abs(n ?? 0);
  if (v < 1024) return `${Math.round(n ?? 0)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = v;
  let unit = -1;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const pad2 = (n) => String(n).padStart(2, '0');

// ISO-8601 -> local "HH:MM:SS.mmm"
export function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  const ms = String(d.getMilliseconds()).padStart(3, '0');
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${ms}`;
}

export function dateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${clock(iso)}`;
}

// The wire lists TCP flags in header order (["ACK", "PSH"]); they read in the one form the
// decoder's `info` and `leireye watch` use, least significant bit first: "PSH, ACK".
const TCP_FLAG_ORDER = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'];

export function tcpFlags(names) {
  const given = new Set(names ?? []);
  return TCP_FLAG_ORDER.filter((name) => given.has(name)).join(', ');
}
