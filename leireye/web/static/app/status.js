// The capture chip in the top bar, the connection indicator and the counters of the status bar.

import { $ } from './dom.js';
import { bytes, compact, count } from './format.js';

const STATE_TEXT = {
  idle: 'Idle',
  starting: 'Starting…',
  capturing: 'Capturing',
  stopped: 'Stopped',
  error: 'Error',
  finished: 'Finished',
};

export class StatusView {
  clientDropped = 0; // packets the server told this client it skipped (`dropped` messages)
  #countdown = null;

  status(data) {
    const state = data.state ?? (data.is_capturing ? 'capturing' : 'stopped');
    const chip = $('#capture-chip');
    chip.dataset.state = state;
    $('#capture-state').textContent = STATE_TEXT[state] ?? state;
    $('#capture-iface').textContent = data.interface || '–';
    // What the kernel runs: the user's filter with the sensor's own web traffic left out.
    const effective = data.effective_bpf || data.bpf; // empty until the source is open
    const bpf = $('#capture-bpf');
    bpf.textContent = effective || 'none';
    bpf.title = effective
      ? `Kernel filter: ${effective}` + (effective !== data.bpf ? `\nYour filter: ${data.bpf || 'none'}` : '')
      : 'no BPF filter';
    chip.title = data.error ? `Capture error: ${data.error}` : '';
    if (data.kernel_drops !== undefined) this.#set('#sb-kernel', data.kernel_drops);
    this.#fleet(data.fleet);
  }

  // A sensor in a fleet: whether its publisher reaches NATS (docs/fleet.md); the counters as
  // of this status message in the tooltip (the message comes on a change, not every second).
  #fleet(fleet) {
    const item = $('#sb-fleet');
    if (!item) return;
    item.hidden = !fleet;
    if (!fleet) return;
    const state = fleet.connected ? 'connected' : 'not connected';
    const differs = fleet.stream_mismatch?.length ? ' · stream settings differ' : '';
    item.textContent = `fleet ${fleet.sensor}: ${state}${differs}`;
    item.dataset.state = fleet.connected ? 'ok' : 'error';
    item.title = [
      `NATS: ${(fleet.servers ?? []).join(', ')}`,
      `${count(fleet.published_records)} packets sent, ${count(fleet.lost)} lost, ${count(fleet.behind)} behind`,
      fleet.last_error ? `Last error: ${fleet.last_error}` : '',
      ...(fleet.stream_mismatch ?? []),
    ].filter(Boolean).join('\n');
  }

  // `rates`: the top bar's packets/s and bytes/s (the totals, or at a central the selected
  // sensors' own, named by `rates.label`: fleet.ratesFor).
  stats(data, rates = data) {
    $('#rate-pps').textContent = compact(rates.packets_per_second ?? 0);
    $('#rate-bps').textContent = bytes(rates.bytes_per_second ?? 0);
    const scope = $('#rate-scope');
    scope.hidden = !rates.label;
    scope.textContent = rates.label ?? '';
    scope.title = rates.label ? `The rates of ${rates.label} (all sensors: the charts)` : '';
    this.#set('#sb-kernel', (data.kernel_drops ?? 0) + (data.if_drops ?? 0));
    this.#set('#sb-ring', (data.ring_lost ?? 0) + (data.stream_lost ?? 0));
    this.#set('#sb-client', Math.max(this.clientDropped, data.client_dropped ?? 0));
  }

  dropped(count_) {
    this.clientDropped += count_;
    this.#set('#sb-client', this.clientDropped);
  }

  skipped(n) {
    this.#set('#sb-skipped', n);
  }

  rows(shown, received) {
    $('#sb-rows').textContent = count(shown);
    $('#sb-received').textContent = count(received);
  }

  filters(filters) {
    const parts = Object.entries(filters ?? {})
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${v}`);
    $('#sb-filter').textContent = parts.length ? `filter: ${parts.join(' ')}` : 'no filter';
  }

  connection({ state, delayMs, reason }) {
    const conn = $('#conn');
    conn.dataset.state = state;
    clearInterval(this.#countdown);
    const text = $('#conn-text');
    if (state === 'open') {
      text.textContent = 'Live';
      conn.dataset.opens = String(Number(conn.dataset.opens ?? 0) + 1);
    }
    else if (state === 'connecting') text.textContent = 'Connecting…';
    else if (state === 'reconnecting') {
      text.textContent = `Connection lost${reason ? ` (${reason})` : ''} · reconnecting…`;
    }
    else if (state === 'closed') text.textContent = 'Disconnected';
    else if (state === 'waiting') {
      const until = Date.now() + delayMs;
      const tick = () => {
        const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        text.textContent = `Connection lost${reason ? ` (${reason})` : ''} · retry in ${left} s`;
      };
      tick();
      this.#countdown = setInterval(tick, 500);
    }
  }

  #set(selector, value) {
    const el = $(selector);
    el.textContent = count(value);
    el.classList.toggle('warn', value > 0);
  }
}
