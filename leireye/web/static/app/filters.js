// The filter bar: its fields are the subscription's `filters`, one to one.
//
// Values go to the server as typed (digits as numbers); the server is the one judge of what is
// valid, and its `error` (with `field`) is shown under that field. The `sensor` field (a central's
// sensor selector, fleet.js) counts only while it is shown, and applies as soon as it changes.

import { $$ } from './dom.js';
import { selectorValue, sensorFilter } from './fleet.js';

export const FIELDS = ['protocol', 'src_ip', 'dst_ip', 'port', 'min_length', 'max_length', 'sensor'];
const NUMERIC = new Set(['port', 'min_length', 'max_length']);

export class FilterBar {
  #form;

  constructor(form, onApply) {
    this.#form = form;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      onApply(this.read());
    });
    form.querySelector('#filter-clear').addEventListener('click', () => {
      for (const name of FIELDS) this.#input(name).value = '';
      onApply(this.read());
    });
    for (const name of FIELDS) {
      this.#input(name).addEventListener('input', () => this.#mark(name, null));
    }
    this.#input('sensor').addEventListener('change', () => onApply(this.read()));
  }

  read() {
    const filters = {};
    for (const name of FIELDS) {
      if (this.#field(name).hidden) continue;
      const text = this.#input(name).value.trim();
      if (text === '') continue;
      if (name === 'sensor') filters.sensor = sensorFilter(text);
      else filters[name] = NUMERIC.has(name) && /^\d{1,15}$/.test(text) ? Number(text) : text;
    }
    return filters;
  }

  // Put the applied (normalised) filters back into the fields.
  show(filters) {
    for (const name of FIELDS) this.set(name, filters?.[name]);
  }

  set(name, value) {
    const input = this.#input(name);
    if (name === 'sensor') {
      const text = selectorValue(value);
      // A selection the list does not offer (several sensors, one not seen yet) gets its option.
      if (![...input.options].some((option) => option.value === text)) {
        input.append(new Option(text.split(',').join(', '), text));
      }
      input.value = text;
      return;
    }
    input.value = value === null || value === undefined ? '' : String(value);
  }

  clearErrors() {
    for (const name of FIELDS) this.#mark(name, null);
  }

  showError(field, message) {
    this.clearErrors();
    if (field && FIELDS.includes(field)) {
      this.#mark(field, message);
      this.#input(field).focus();
      return true;
    }
    return false;
  }

  focus() {
    this.#input('protocol').focus();
    this.#input('protocol').select();
  }

  #input(name) {
    return this.#form.elements.namedItem(name);
  }

  #field(name) {
    return $$(`.field[data-field="${name}"]`, this.#form)[0];
  }

  #mark(name, message) {
    const field = this.#field(name);
    const input = this.#input(name);
    field.classList.toggle('invalid', Boolean(message));
    field.querySelector('.field-error').textContent = message ?? '';
    if (message) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}
