// Capture control for ADMIN: interface, BPF, start and stop (/api/capture/*).

import { $, h } from './dom.js';

export class CaptureControl {
  #session;
  #form = $('#capture-form');
  #select = $('#capture-interface');
  #bpf = $('#capture-filter');
  #start = $('#capture-start');
  #stop = $('#capture-stop');
  #error = $('#capture-error');
  #status = null;
  #edited = false;

  constructor(session, onStatus) {
    this.#session = session;
    this.onStatus = onStatus;
    this.#form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#run('start', {
        interface: this.#select.value || null,
        filter: this.#bpf.value.trim(),
      });
    });
    this.#stop.addEventListener('click', () => this.#run('stop'));
    this.#bpf.addEventListener('input', () => {
      this.#edited = true;
    });
  }

  async load() {
    $('#capture-card').hidden = false;
    try {
      const { interfaces } = await this.#session.request('GET', '/api/capture/interfaces');
      const current = this.#status?.interface;
      this.#select.replaceChildren(...interfaces.map((i) => {
        const addresses = (i.addresses ?? []).map((a) => a.address).join(', ');
        const label = `${i.name}${i.up ? '' : ' (down)'}`;
        return h('option', { value: i.name, selected: i.name === current, title: addresses }, label);
      }));
    } catch (err) {
      this.#showError(err.message);
    }
  }

  status(data) {
    this.#status = data;
    const busy = data.state === 'starting';
    this.#start.textContent = data.is_capturing ? 'Restart' : 'Start';
    this.#stop.disabled = busy || !data.is_capturing;
    if (data.interface && [...this.#select.options].some((o) => o.value === data.interface)) {
      this.#select.value = data.interface;
    }
    if (!this.#edited) this.#bpf.value = data.bpf ?? '';
  }

  async #run(action, body) {
    this.#showError('');
    this.#start.disabled = true;
    this.#stop.disabled = true;
    try {
      const data = await this.#session.request('POST', `/api/capture/${action}`, { body });
      this.#edited = false;
      if (data && typeof data === 'object' && 'is_capturing' in data) this.onStatus(data);
    } catch (err) {
      this.#showError(err.message);
    } finally {
      this.#start.disabled = false;
      this.#stop.disabled = !this.#status?.is_capturing;
    }
  }

  #showError(message) {
    this.#error.textContent = message;
    this.#error.hidden = !message;
  }
}
