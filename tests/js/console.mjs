// The pure parts of the console's flow views, table sorting and fleet parts (static/app/): run by
// tests/unit/test_console_js.py; prints `ok` when all pass.
import assert from 'node:assert/strict';
import { addressKey, compareValues, nextSort, sortItems } from '../../leireye/web/static/app/sorting.js';
import { flowPacketFilter, matchesFlow, parseRoute } from '../../leireye/web/static/app/views.js';
import { stepFor } from '../../leireye/web/static/app/timerange.js';
import { stack } from '../../leireye/web/static/app/stacked.js';
import { duration, flowInfo } from '../../leireye/web/static/app/flows.js';
import { flowFilters } from '../../leireye/web/static/app/flowdata.js';
import { withLive } from '../../leireye/web/static/app/hosts.js';
import {
  age, centralOf, markCentral, ratesFor, selectionOf, selectorValue, sensorFilter, sensorRows,
} from '../../leireye/web/static/app/fleet.js';
import { sortKey } from '../../leireye/web/static/app/table.js';

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
// At a central the sensor selector narrows the flows too: one name, or several as `a,b`.
assert.deepEqual(flowFilters({ sensor: 'edge-a', port: 53 }), { port: 53, sensor: 'edge-a' });
assert.deepEqual(flowFilters({ sensor: ['edge-a', 'edge-b'] }), { sensor: 'edge-a,edge-b' });

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
assert.equal(flowInfo({ icmp_id: 0 }), 'ICMP id 0');
assert.equal(flowInfo({ icmp_id: null }), '');

// Live hosts join the stored ones: new ones appended (marked), known ones get their new names.
const stored = [{ ip: '10.0.0.1', names: ['a.test'], bytes_sent: 5 }];
const live = [{ ip: '10.0.0.1', names: ['b.test'] }, { ip: '10.0.0.2', names: ['c.test'] }];
const merged = withLive(stored, live);
assert.deepEqual(merged.map((h) => [h.ip, h.names, h.live ?? false]),
  [['10.0.0.1', ['a.test', 'b.test'], false], ['10.0.0.2', ['c.test'], true]]);
assert.deepEqual(stored[0].names, ['a.test']); // the caller's rows are not changed
assert.deepEqual(withLive(stored, null), stored);

// A fleet central: only a status saying `central: true` shows the selector, the Sensor column
// (the root's `central` class) and the sensors panel; a lone sensor's status never says, and a
// status that does not say (a capture start's reply) changes nothing.
const fakeRoot = () => {
  const classes = new Set();
  return { classList: { contains: (c) => classes.has(c), toggle: (c, on) => (on ? classes.add(c) : classes.delete(c)) } };
};
const lone = { root: fakeRoot(), field: { hidden: true }, panel: { hidden: true } };
const loneStatus = { state: 'capturing', interface: 'lo', kernel_drops: 0 };
assert.equal(centralOf(loneStatus), null);
assert.equal(markCentral(lone, loneStatus), false);
assert.deepEqual([lone.root.classList.contains('central'), lone.field.hidden, lone.panel.hidden], [false, true, true]);
const central = { root: fakeRoot(), field: { hidden: true }, panel: { hidden: true } };
assert.equal(markCentral(central, { ...loneStatus, central: true, sensors: [] }), true);
assert.deepEqual([central.root.classList.contains('central'), central.field.hidden, central.panel.hidden], [true, false, false]);
assert.equal(markCentral(central, { state: 'stopped' }), true); // a reply that does not say
assert.equal(central.field.hidden, false);
assert.equal(markCentral(central, { central: false }), false);
assert.deepEqual([central.root.classList.contains('central'), central.field.hidden, central.panel.hidden], [false, true, true]);
assert.equal(centralOf(null), null);
assert.equal(centralOf({ central: 'yes' }), false);

// The selector's value -> filters.sensor: none for all sensors, a name for one, a list for several.
assert.equal(sensorFilter(''), undefined);
assert.equal(sensorFilter(' , '), undefined);
assert.equal(sensorFilter('edge-a'), 'edge-a');
assert.deepEqual(sensorFilter('edge-a, edge-b,edge-a'), ['edge-a', 'edge-b']);
assert.deepEqual(selectionOf(['b', 'a']), ['b', 'a']);
assert.deepEqual(selectionOf(undefined), []);
assert.equal(selectorValue(['edge-a']), 'edge-a'); // the server's echo of a list of one
assert.equal(selectorValue(['edge-a', 'edge-b']), 'edge-a,edge-b');
assert.equal(selectorValue(null), '');

// The sensors panel: name order, silent ones marked, ages, own rates from by_sensor.
const now = 1_700_000_000_000;
const fleet = [
  { name: 'edge-b', state: 'silent', last_message_ms: now - 63_000, packets: 10, lost: 7, bad_batches: 1 },
  { name: 'edge-a', state: 'live', last_message_ms: now - 400, packets: 99, lost: 0, bad_batches: 0 },
  { name: 'edge-c', state: 'never', last_message_ms: 0, packets: 0, lost: 0, bad_batches: 0 },
];
const panel = sensorRows(fleet, now, { 'edge-a': { packets_per_second: 12, bytes_per_second: 3400 } });
assert.deepEqual(panel.map((r) => [r.name, r.state, r.silent, r.age, r.lost]), [
  ['edge-a', 'live', false, '0 s ago', 0],
  ['edge-b', 'silent', true, '1 min ago', 7],
  ['edge-c', 'never', false, 'never', 0],
]);
assert.deepEqual([panel[0].pps, panel[0].bps, panel[1].pps], [12, 3400, null]);
assert.equal(sensorRows([{ name: 'x', state: 'bogus' }], now)[0].state, 'never');
assert.deepEqual(sensorRows(undefined, now), []);
assert.equal(age(now - 59_999, now), '59 s ago');
assert.equal(age(now - 2 * 3600_000, now), '2 h ago');
assert.equal(age(now - 3 * 86400_000, now), '3 d ago');
assert.equal(age(now + 5000, now), '0 s ago'); // a clock ahead of the browser's

// The top bar's rates: the totals, or the selected sensors' own (summed) from by_sensor.
const stats = { packets_per_second: 100, bytes_per_second: 9000,
  by_sensor: { 'edge-a': { packets_per_second: 60, bytes_per_second: 5000 }, 'edge-b': { packets_per_second: 40, bytes_per_second: 4000 } } };
assert.deepEqual(ratesFor(stats, undefined), { packets_per_second: 100, bytes_per_second: 9000, label: '' });
assert.deepEqual(ratesFor(stats, 'edge-a'), { packets_per_second: 60, bytes_per_second: 5000, label: 'edge-a' });
assert.deepEqual(ratesFor(stats, ['edge-a', 'edge-b']), { packets_per_second: 100, bytes_per_second: 9000, label: '2 sensors' });
assert.deepEqual(ratesFor(stats, 'edge-z'), { packets_per_second: 0, bytes_per_second: 0, label: 'edge-z' });
assert.deepEqual(ratesFor({ packets_per_second: 5, bytes_per_second: 6 }, 'edge-a'), { packets_per_second: 5, bytes_per_second: 6, label: '' });

// The Sensor column sorts by name; a lone sensor's packets have none (empty values sort last).
assert.equal(sortKey({ sensor: 'edge-b' }, 'sensor'), 'edge-b');
assert.equal(sortKey({ id: 3 }, 'sensor'), undefined);

console.log('ok');
