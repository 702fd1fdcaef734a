// The pure parts of the console's flow views and table sorting (static/app/): run by
// tests/unit/test_console_js.py; prints `ok` when all pass.
import assert from 'node:assert/strict';
import { addressKey, compareValues, nextSort, sortItems } from '../../leireye/web/static/app/sorting.js';
import { flowPacketFilter, matchesFlow, parseRoute } from '../../leireye/web/static/app/views.js';
import { stepFor } from '../../leireye/web/static/app/timerange.js';
import { stack } from '../../leireye/web/static/app/stacked.js';
import { duration, flowInfo } from '../../leireye/web/static/app/flows.js';
import { flowFilters } from '../../leireye/web/static/app/flowdata.js';
import { withLive } from '../../leireye/web/static/app/hosts.js';

// Addresses sort as numbers, IPv4 before IPv6; IPv6 expanded.
const ips = ['10.0.0.10', '::1', '10.0.0.9', '2001:db8::1', '9.255.0.1', '2001:db8:0:0:0:0:0:2'];
assert.deepEqual(ips.slice().sort((a, b) => compareValues(addressKey(a), addressKey(b))),
  ['9.255.0.1', '10.0.0.9', '10.0.0.10', '::1', '2001:db8::1', '2001:db8:0:0:0:0:0:2']);
assert.equal(addressKey('2001:db8::1'), addressKey('2001:0db8:0:0:0:0:0:1'));

// asc -> desc -> off; a new column starts ascending.
assert.deepEqual(nextSort(null, 'len'), { column: 'len', direction: 'asc' });
assert.deepEqual(nextSort({ column: 'len', direction: 'asc' }, 'len'), { column: 'len', direction: 'desc' });
assert.equal(nextSort({ column: 'len', direction: 'desc' }, 'len'), null);
assert.deepEqual(nextSort({ column: 'len', direction: 'desc' }, 'id'), { column: 'id', direction: 'asc' });

// Stable, empty values last both ways, the input left alone.
const rows = [{ k: 2, n: 'a' }, { k: null, n: 'b' }, { k: 1, n: 'c' }, { k: 2, n: 'd' }, { k: '', n: 'e' }];
const by = (r) => r.k;
assert.deepEqual(sortItems(rows, { column: 'k', direction: 'asc' }, by).map((r) => r.n), ['c', 'a', 'd', 'b', 'e']);
assert.deepEqual(sortItems(rows, { column: 'k', direction: 'desc' }, by).map((r) => r.n), ['a', 'd', 'c', 'b', 'e']);
assert.equal(rows[0].n, 'a');
assert.ok(compareValues('port 9', 'port 10') < 0);

// Views by fragment.
assert.deepEqual(parseRoute(''), { name: 'packets', ip: null });
assert.deepEqual(parseRoute('#/flows'), { name: 'flows', ip: null });
assert.deepEqual(parseRoute('#/nonsense'), { name: 'packets', ip: null });
assert.deepEqual(parseRoute('#/host/2001%3Adb8%3A%3A1'), { name: 'host', ip: '2001:db8::1' });

// A flow's packets: the subscription is wider, matchesFlow exact, both ways.
const flow = { transport: 'TCP', orig_ip: '10.0.0.1', orig_port: 40000, resp_ip: '10.0.0.2', resp_port: 443 };
assert.deepEqual(flowPacketFilter(flow), { protocol: 'TCP', ip: '10.0.0.2', port: 40000 });
const pkt = (src_ip, src_port, dst_ip, dst_port) => ({ src_ip, src_port, dst_ip, dst_port });
assert.ok(matchesFlow(pkt('10.0.0.1', 40000, '10.0.0.2', 443), flow));
assert.ok(matchesFlow(pkt('10.0.0.2', 443, '10.0.0.1', 40000), flow));
assert.ok(!matchesFlow(pkt('10.0.0.2', 40000, '10.0.0.1', 443), flow));
assert.ok(!matchesFlow(pkt('10.0.0.3', 40000, '10.0.0.2', 443), flow));
const ping = { transport: 'ICMP', orig_ip: '10.0.0.1', orig_port: 8, resp_ip: '10.0.0.2', resp_port: 0 };
assert.deepEqual(flowPacketFilter(ping), { protocol: 'ICMP', ip: '10.0.0.2' });
assert.ok(matchesFlow(pkt('10.0.0.2', null, '10.0.0.1', null), ping));

// The flow query takes the packet filter's keys less the length bounds.
assert.deepEqual(flowFilters({ protocol: 'UDP', port: 53, min_length: 10, max_length: 99, ip: '::1' }),
  { protocol: 'UDP', ip: '::1', port: 53 });

// Steps: a minute at least, at most 300 intervals.
assert.equal(stepFor(300), 60);
assert.equal(stepFor(3600), 60);
assert.equal(stepFor(86400), 300);
assert.equal(stepFor(7 * 86400), 3600);
assert.equal(stepFor(400 * 86400), 86400);

// Stacking: intervals filled with 0, the largest keys first, the rest as "other".
const range = { fromMs: 0, toMs: 180_000, stepS: 60 };
const points = [
  { t: 0, key: 'DNS', value: 5 }, { t: 60_000, key: 'TLS', value: 100 },
  { t: 125_000, key: 'DNS', value: 1 }, { t: 120_000, key: 'NTP', value: 2 }, { t: 999_000_000, key: 'TLS', value: 7 },
];
const s = stack(points, range, 2);
assert.deepEqual(s.xs, [0, 60, 120, 180]);
assert.deepEqual(s.keys, ['TLS', 'other']);
assert.deepEqual(s.values.get('TLS'), [0, 100, 0, 0]);
assert.deepEqual(s.values.get('other'), [5, 0, 3, 0]);
assert.deepEqual(stack(points, range).keys, ['TLS', 'DNS', 'NTP']);

assert.equal(duration(250), '250 ms');
assert.equal(duration(1234), '1.23 s');
assert.equal(duration(125_000), '2 m 5 s');
assert.equal(duration(3_723_000), '1 h 2 m');
assert.equal(flowInfo({ dns_query: 'a.test', dns_rcode: 'NXDOMAIN' }), 'DNS a.test NXDOMAIN');
assert.equal(flowInfo({ tls_sni: 'b.test', tls_alpn: 'h2', http_method: 'GET', http_host: 'c.test', http_path: '/x' }),
  'SNI b.test (h2) · GET c.test/x');
assert.equal(flowInfo({}), '');

// Live hosts join the stored ones: new ones appended (marked), known ones get their new names.
const stored = [{ ip: '10.0.0.1', names: ['a.test'], bytes_sent: 5 }];
const live = [{ ip: '10.0.0.1', names: ['b.test'] }, { ip: '10.0.0.2', names: ['c.test'] }];
const merged = withLive(stored, live);
assert.deepEqual(merged.map((h) => [h.ip, h.names, h.live ?? false]),
  [['10.0.0.1', ['a.test', 'b.test'], false], ['10.0.0.2', ['c.test'], true]]);
assert.deepEqual(stored[0].names, ['a.test']); // the caller's rows are not changed
assert.deepEqual(withLive(stored, null), stored);

console.log('ok');
