// A sortable table of records (flows, hosts, peers): columns declared once, rows redrawn whole.
//
// For lists of hundreds of rows that change every few seconds (the packet table, thousands of
// rows a second, has its own virtualised one). `columns`: [{key, label, title, cls, sort(item)
// -> value to sort by, cell(item) -> text or Node}]. A header click sorts as in the packet
// table (sorting.js); a row click emits 'pick' with the item, unless an address in it was
// clicked ('address'). A redraw keeps the scroll position and the sort.

import { Emitter, h } from './dom.js';
import { nextSort, showSort, sortItems } from './sorting.js';

export class DataTable extends Emitter {
  #table;
  #head;
  #body;
  #columns;
  #items = [];
  #rowKey;
  #rowClass;
  #rowsByKey = new Map();
  sort;
  emptyText;

  constructor(table, columns, {
    sort = null, rowKey = null, rowClass = () => '', emptyText = 'Nothing yet.',
  } = {}) {
    super();
    this.#rowClass = rowClass;
    this.#table = table;
    this.#columns = columns;
    this.#rowKey = rowKey;
    this.sort = sort;
    this.emptyText = emptyText;
    this.#head = h('tr', {}, columns.map((c) => h('th', {
      class: c.cls, title: c.title, 'data-sort': c.key, tabindex: 0, scope: 'col',
      onclick: () => this.setSort(nextSort(this.sort, c.key)),
      onkeydown: (event) => {
        if (event.key === 'Enter') this.setSort(nextSort(this.sort, c.key));
      },
    }, c.label)));
    this.#body = h('tbody');
    table.replaceChildren(h('thead', {}, this.#head), this.#body);
    table.addEventListener('click', (event) => {
      const address = event.target.closest('.addr');
      if (address?.dataset.ip) {
        event.stopPropagation();
        this.emit('address', address.dataset.ip);
        return;
      }
      const row = event.target.closest('tbody tr');
      if (row?.item) this.emit('pick', row.item);
    });
    showSort(this.#head, this.sort);
  }

  get items() {
    return this.#items;
  }

  setItems(items) {
    this.#items = items;
    this.draw();
  }

  setSort(sort) {
    this.sort = sort;
    showSort(this.#head, sort);
    this.#table.dataset.sorted = sort ? `${sort.column} ${sort.direction}` : '';
    this.draw();
  }

  // The items as shown (sorted), e.g. for a search's count.
  shown() {
    if (!this.sort) return this.#items;
    const column = this.#columns.find((c) => c.key === this.sort.column);
    return sortItems(this.#items, this.sort, (item) => column.sort(item));
  }

  draw() {
    const items = this.shown();
    const kept = new Map();
    const rows = items.map((item, i) => {
      const key = this.#rowKey ? String(this.#rowKey(item)) : String(i);
      // The same element for the same record across redraws: a click or a hover is not lost
      // to a poll that redraws the table under the pointer.
      const row = this.#rowsByKey.get(key) ?? h('tr', { dataset: { key } },
        this.#columns.map((c) => h('td', { class: c.cls })));
      row.className = this.#rowClass(item);
      row.item = item;
      this.#columns.forEach((c, k) => {
        const value = c.cell(item);
        row.children[k].replaceChildren(value instanceof Node ? value : String(value ?? ''));
      });
      kept.set(key, row);
      return row;
    });
    this.#rowsByKey = kept;
    if (rows.length === 0) {
      rows.push(h('tr', { class: 'empty' },
        h('td', { colspan: this.#columns.length, class: 'table-empty-cell' }, this.emptyText)));
    }
    // Rows moved only when the order changed: a node taken out and put back between a
    // mousedown and its mouseup loses the click.
    const current = this.#body.children;
    const same = current.length === rows.length && rows.every((row, i) => current[i] === row);
    if (!same) this.#body.replaceChildren(...rows);
    this.#table.dataset.rows = String(items.length);
  }
}
