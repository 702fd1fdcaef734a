// Saved filters: named sets of the filter bar's fields, kept in localStorage (this browser only).
//
// Choosing one in the list applies it; "Save…" asks for a name and keeps the fields as they are
// (a taken name is replaced); "Delete" removes the chosen one.

import { h } from './dom.js';

const KEY = 'leireye.filter-presets';

export function loadPresets() {
  try {
    const value = JSON.parse(localStorage.getItem(KEY) ?? '{}');
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

function savePresets(presets) {
  localStorage.setItem(KEY, JSON.stringify(presets));
}

export class PresetControl {
  #root;
  #select;
  #naming;
  #name;
  #save;
  #delete;

  // read(): the filters in the fields; apply(filters): fill the fields and apply them.
  constructor(root, { read, apply }) {
    this.#root = root;
    this.#select = root.querySelector('#preset-select');
    this.#naming = root.querySelector('#preset-naming');
    this.#name = root.querySelector('#preset-name');
    this.#save = root.querySelector('#preset-save');
    this.#delete = root.querySelector('#preset-delete');
    this.#select.addEventListener('change', () => {
      const filters = loadPresets()[this.#select.value];
      this.#delete.disabled = filters === undefined;
      if (filters !== undefined) apply(filters);
    });
    this.#save.addEventListener('click', () => {
      this.#naming.hidden = false;
      this.#save.hidden = true;
      this.#name.value = this.#select.value;
      this.#name.focus();
    });
    const commit = () => {
      const name = this.#name.value.trim();
      if (name) {
        savePresets({ ...loadPresets(), [name]: read() });
        this.#draw(name);
      }
      this.#closeNaming();
    };
    root.querySelector('#preset-ok').addEventListener('click', commit);
    this.#name.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault(); // not the filter bar's submit
        commit();
      } else if (event.key === 'Escape') {
        event.stopPropagation();
        this.#closeNaming();
      }
    });
    this.#delete.addEventListener('click', () => {
      const presets = loadPresets();
      delete presets[this.#select.value];
      savePresets(presets);
      this.#draw('');
    });
    this.#draw('');
  }

  #closeNaming() {
    this.#naming.hidden = true;
    this.#save.hidden = false;
  }

  #draw(chosen) {
    const names = Object.keys(loadPresets()).sort((a, b) => a.localeCompare(b));
    this.#select.replaceChildren(
      h('option', { value: '' }, names.length ? 'Saved filters…' : 'No saved filters'),
      ...names.map((name) => h('option', { value: name, selected: name === chosen }, name)),
    );
    this.#delete.disabled = !names.includes(chosen);
    this.#root.dataset.presets = String(names.length);
  }
}
