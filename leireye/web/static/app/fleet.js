// At a fleet central (docs/fleet.md): the sensor selector, the Sensor column and the sensors
// panel. A central's `status` says `central: true` and lists its sensors; on a lone sensor it
// says neither, and nothing of this module shows: the console looks as it always did.
//
// The selector is the filter bar's `sensor` field (a <select>): its value is one name, or
// several joined by commas (a saved filter, or a subscription the server echoed with a list);
// `sensorFilter` turns it into the subscription's `filters.sensor`. The Sensor column and the
// sensors panel follow the `central` class on the console's root (console.css).

import { h } from './dom.js';
import { bytes, compact, count } from './format.js';

// Whether a status comes from a central: true or false, or null when it does not say (a lone
// sensor's statuses never do, nor does the reply to a capture start or stop).
export function centralOf(status) {
  if (status === null || typeof status !== 'object' || !('central' in status)) return null;
  return status.central === true;
}

// Show or hide everything of a central: the root's `central` class (the Sensor column), the
// selector's field and the sensors panel; a status that does not say leaves them as they are.
// Returns whether this is a central.
export function markCentral({ root, field, panel }, status) {
  const central = centralOf(status) ?? root.classList.contains('central');
  root.classList.toggle('central', central);
  field.hidden = !central;
  panel.hidden = !central;
  return central;
}

// The selector's value ('' = all sensors, 'a', or 'a,b') as `filters.sensor`: undefined for all
// sensors, a name for one, a list for several.
export function sensorFilter(text) {
  const names = selectionOf(text);
  if (names.length === 0) return undefined;
  return names.length === 1 ? names[0] : names;
}

// The names a `filters.sensor` (a name, a list, or the selector's comma-joined text) selects.
export function selectionOf(value) {
  const list = Array.isArray(value) ? value : String(value ?? '').split(',');
  return [...new Set(list.map((name) => String(name).trim()).filter(Boolean))];
}

// The selector's text for a `filters.sensor`.
export function selectorValue(value) {
  return selectionOf(value).join(',');
}

// "3 s ago", "4 min ago", "never": the age of a sensor's last message (`last_message_ms`, Unix
// milliseconds; 0 or absent: none yet), seen from the browser's clock at `nowMs`.
export function age(lastMs, nowMs) {
  if (!lastMs) return 'never';
  const s = Math.max(0, Math.floor((nowMs - lastMs) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// The sensors panel's rows: each sensor of the status, in name order, with what to show.
// `rates`: the stats' `by_sensor`, when known.
export function sensorRows(sensors, nowMs, rates = {}) {
  return (sensors ?? [])
    .slice()
    .sort((a, b) => String(a.name).localeCompare(String(b.name), 'en', { numeric: true }))
    .map((s) => {
      const state = ['live', 'silent', 'never'].includes(s.state) ? s.state : 'never';
      const own = rates?.[s.name];
      return {
        name: s.name,
        state,
        silent: state === 'silent',
        age: age(s.last_message_ms, nowMs),
        packets: s.packets ?? 0,
        lost: s.lost ?? 0,
        badBatches: s.bad_batches ?? 0,
        pps: own ? own.packets_per_second ?? 0 : null,
        bps: own ? own.bytes_per_second ?? 0 : null,
      };
    });
}

// The rates the top bar shows: the totals, or, when sensors are selected and the stats carry
// `by_sensor`, the sum of theirs, with a label naming them.
export function ratesFor(stats, selection) {
  const total = {
    packets_per_second: stats?.packets_per_second ?? 0,
    bytes_per_second: stats?.bytes_per_second ?? 0,
    label: '',
  };
  const names = selectionOf(selection);
  const bySensor = stats?.by_sensor;
  if (names.length === 0 || !bySensor) return total;
  const own = names.map((name) => bySensor[name]).filter(Boolean);
  if (own.length === 0) return { packets_per_second: 0, bytes_per_second: 0, label: names.join(', ') };
  return {
    packets_per_second: own.reduce((sum, s) => sum + (s.packets_per_second ?? 0), 0),
    bytes_per_second: own.reduce((sum, s) => sum + (s.bytes_per_second ?? 0), 0),
    label: names.length === 1 ? names[0] : `${names.length} sensors`,
  };
}

// The selector's options: all sensors, then each sensor by name (marked when silent or never
// heard from), and the value kept (a selection of several, or a sensor no longer listed, keeps
// an option of its own).
export function fillSelector(select, sensors) {
  const value = select.value;
  const rows = sensorRows(sensors, 0);
  // Rebuilt only when a sensor comes or changes state: an open list is left alone.
  const key = rows.map((row) => `${row.name}:${row.state}`).join(' ');
  if (select.dataset.sensors === key) return;
  select.dataset.sensors = key;
  const options = [h('option', { value: '' }, 'All sensors')];
  for (const row of rows) {
    const mark = row.state === 'live' ? '' : ` (${row.state})`;
    options.push(h('option', { value: row.name, dataset: { state: row.state } }, `${row.name}${mark}`));
  }
  if (value && !rows.some((row) => row.name === value)) {
    options.push(h('option', { value }, selectionOf(value).join(', ')));
  }
  select.replaceChildren(...options);
  select.value = value;
}

// The sensors panel: one row per sensor (state dot, name, last message, rates, lost), silent
// ones marked; clicking one selects it (onPick(name)). Ages tick every second between statuses.
export class SensorsPanel {
  #list;
  #summary;
  #sensors = [];
  #rates = {};
  #error = null;
  #timer = null;

  constructor({ list, summary, onPick }) {
    this.#list = list;
    this.#summary = summary;
    list.addEventListener('click', (event) => {
      const row = event.target.closest('[data-sensor]');
      if (row) onPick(row.dataset.sensor);
    });
    list.addEventListener('keydown', (event) => {
      const row = event.target.closest('[data-sensor]');
      if (row && event.key === 'Enter') onPick(row.dataset.sensor);
    });
  }

  // A status, or GET /api/sensors (which also says when the sensor table could not be read).
  status(data) {
    this.#sensors = data?.sensors ?? [];
    if (data && 'error' in data) this.#error = data.error || null;
    this.#draw();
    this.#timer ??= setInterval(() => this.#draw(), 1000);
  }

  stats(data) {
    this.#rates = data?.by_sensor ?? {};
  }

  #draw() {
    const rows = sensorRows(this.#sensors, Date.now(), this.#rates);
    const silent = rows.filter((row) => row.state !== 'live').length;
    this.#summary.textContent = silent ? `${rows.length} · ${silent} not live` : String(rows.length);
    this.#summary.classList.toggle('warn', silent > 0);
    const error = this.#error
      ? h('div', { class: 'sensors-error form-error', title: this.#error }, `Sensor table: ${this.#error}`)
      : null;
    if (rows.length === 0) {
      this.#list.replaceChildren(...[error, h('div', { class: 'muted small' }, 'No sensor has been seen yet.')]
        .filter(Boolean));
      return;
    }
    this.#list.replaceChildren(...(error ? [error] : []), ...rows.map((row) => h('div', {
      class: `sensor-row${row.silent ? ' silent' : ''}`,
      dataset: { sensor: row.name, state: row.state },
      role: 'button',
      tabindex: 0,
      title: `${row.name}: ${row.state}; last message ${row.age}; ${count(row.packets)} packets, `
        + `${count(row.lost)} lost, ${count(row.badBatches)} bad batches. Click to show only its packets.`,
    },
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    h('span', { class: 'sensor-name' }, row.name),
    h('span', { class: 'sensor-state' }, row.state),
    h('span', { class: 'sensor-age muted' }, row.age),
    h('span', { class: 'sensor-rate mono' },
      row.pps === null ? '' : `${compact(row.pps)} pkt/s · ${bytes(row.bps)}/s`),
    h('span', { class: `sensor-lost mono${row.lost > 0 ? ' warn' : ''}` }, `${count(row.lost)} lost`))));
  }
}
