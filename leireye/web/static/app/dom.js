// Small DOM and event helpers shared by the console's modules.

export function $(selector, root = document) {
  const found = root.querySelector(selector);
  if (found === null) throw new Error(`missing element ${selector}`);
  return found;
}

export function $$(selector, root = document) {
  return Array.from(root.querySelectorAll(selector));
}

// h('div', {class: 'x', dataset: {id: 1}, onclick: fn}, 'text', child)
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A minimal event emitter: on() returns the function that removes the listener.
export class Emitter {
  #listeners = new Map();

  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.#listeners.get(type)?.delete(fn);
  }

  emit(type, value) {
    for (const fn of this.#listeners.get(type) ?? []) {
      try {
        fn(value);
      } catch (err) {
        console.error(`listener for ${type} failed`, err);
      }
    }
  }
}
