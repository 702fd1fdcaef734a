// Where the conversation, host and protocol views get their data: the flow layer's REST
// endpoints (GET /api/flows, /api/hosts, /api/hosts/{ip}, /api/stats/protocols).
//
// One function per question, so that a view never builds a URL itself: when the `flows`
// WebSocket channel comes, `listFlows` is the one place that changes. Times on the wire are
// integers in nanoseconds (leireye/flows/model.py); here they become milliseconds (a float
// keeps a nanosecond count only to about 256 ns, which no view shows).

import { queryString } from './api.js';

// The packet filter's keys that a flow query takes too (the length bounds are per packet).
// `sensor` only comes at a fleet central (the filter bar's selector shows there only), whose
// flows carry their sensor: a list of names goes as `a,b`, as /api/flows takes it.
const FLOW_KEYS = ['protocol', 'src_ip', 'dst_ip', 'ip', 'port', 'src_port', 'dst_port', 'sensor'];

export const LIST_LIMIT = 500;

export function flowFilters(filters) {
  const out = {};
  for (const key of FLOW_KEYS) if (filters?.[key] !== undefined) out[key] = filters[key];
  if (Array.isArray(out.sensor)) out.sensor = out.sensor.join(',');
  return out;
}

export const ms = (ns) => (ns === null || ns === undefined ? null : Number(ns) / 1e6);

// A time for a query parameter: Unix seconds (the endpoints take those or ISO 8601).
function secondsParam(msValue) {
  return msValue === null || msValue === undefined ? undefined : String(Math.floor(msValue / 1000));
}

function listOf(reply, key) {
  if (Array.isArray(reply)) return reply;
  return reply?.[key] ?? reply?.items ?? [];
}

// Active and recently ended flows matching the packet view's filters, newest first.
export async function listFlows(session, filters, { limit = LIST_LIMIT } = {}) {
  const reply = await session.request('GET',
    `/api/flows${queryString({ ...flowFilters(filters), sort: 'start', limit })}`);
  return { flows: listOf(reply, 'flows'), total: reply?.total ?? null };
}

// The hosts of the store's last hour (the minutes written so far), the busiest first.
export async function listHosts(session, { limit = LIST_LIMIT, sort = 'bytes' } = {}) {
  const reply = await session.request('GET', `/api/hosts${queryString({ sort, limit })}`);
  return { hosts: listOf(reply, 'hosts'), total: reply?.total ?? null, live: reply?.live ?? [] };
}

// One host over [fromMs, toMs]: {ip, summary, apps, peers, series, live} (a 404: not seen);
// `summary` is what the store holds of the range, `live` the flow process's Host now.
export async function getHost(session, ip, { fromMs, toMs, stepS }) {
  const query = queryString({ from: secondsParam(fromMs), to: secondsParam(toMs), step: stepS });
  return session.request('GET', `/api/hosts/${encodeURIComponent(ip)}${query}`);
}

// Packets and bytes per application per step: [{start_ns, app, packets, bytes}] from the
// reply's {intervals: [{start_ns, apps: {app: {packets, bytes}}}]}.
export async function protocolSeries(session, { fromMs, toMs, stepS }) {
  const query = queryString({ from: secondsParam(fromMs), to: secondsParam(toMs), step: stepS });
  const reply = await session.request('GET', `/api/stats/protocols${query}`);
  const rows = [];
  for (const interval of reply?.intervals ?? []) {
    for (const [app, v] of Object.entries(interval.apps ?? {})) {
      rows.push({ start_ns: interval.start_ns, app, packets: v.packets ?? 0, bytes: v.bytes ?? 0 });
    }
  }
  return rows;
}
