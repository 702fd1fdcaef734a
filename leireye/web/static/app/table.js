// The live packet table: virtualised, drawn at most once per animation frame.
//
// Only the rows in view exist in the DOM (a pool of about 40 elements, reused); a sizer gives
// the scroll bar the height of every packet kept. Packets arriving only mark the table dirty;
// the next animation frame draws once, however many arrived. Two orders:
// - 'newest': newest on top. At the top, the view follows; scrolled down, it stays on the same
//   packets while new ones arrive above.
// - 'follow': oldest on top, like `tail -f`. At the bottom, the view follows; scrolled up, it
//   stays on the same packets while old ones fall off the top.
// A click on a column header sorts the packets kept by that column (again: descending; a third
// time: back to arrival order). Sorted, new packets land where they sort; the sorted list is
// rebuilt at most every SORT_EVERY_MS while packets arrive, and the view stays where it is
// (at the top, it stays at the top).
//
// Addresses show the host's name when one is known (names.js), the address on hover; clicking
// an address emits 'address'. At a fleet central each packet names its sensor: the Sensor
// column (shown by console.css only at a central) shows it and sorts by it.

import { Emitter, h } from './dom.js';
import { clock, tcpFlags } from './format.js';
import { addressKey, nextSort, showSort, sortItems } from './sorting.js';

const COLUMNS = ['id', 'time', 'sensor', 'src', 'sport', 'dst', 'dport', 'proto', 'len', 'flags', 'info'];
const SORT_EVERY_MS = 250;

export function sortKey(p, column) {
  switch (column) {
    case 'id': return p.id;
    case 'time': return Date.parse(p.timestamp);
    case 'sensor': return p.sensor;
    case 'src': return addressKey(p.src_ip);
    case 'sport': return p.src_port;
    case 'dst': return addressKey(p.dst_ip);
    case 'dport': return p.dst_port;
    case 'proto': return protocolLabel(p);
    case 'len': return p.length;
    case 'flags': return tcpFlags(p.flags);
    default: return p.info;
  }
}

export function protocolClass(label) {
  return `p-${String(label || 'other').toLowerCase().replace(/[^a-z0-9]/g, '')}`;
}

export function protocolLabel(packet) {
  return packet.app || packet.protocol || 'OTHER';
}

export class PacketTable extends Emitter {
  #viewport;
  #sizer;
  #rows;
  #empty;
  #store;
  #rowHeight;
  #pool = [];
  #frame = 0;
  #seenAdded = 0;
  #seenLength = 0;
  #stuck = true; // following the live edge (top in 'newest', bottom in 'follow')
  #header;
  #names;
  #sorted = null; // the packets in sort order, or null when unsorted
  #sortedAt = { added: -1, length: -1, time: 0 };
  sort = null; // {column, direction} or null (arrival order)
  order = 'newest';
  selectedId = null;
  emptyText = 'Waiting for packets…';

  constructor({ viewport, store, names = null, rowHeight = 22 }) {
    super();
    this.#viewport = viewport;
    this.#names = names;
    this.#header = viewport.parentElement.querySelector('.row.header');
    for (const cell of this.#header.children) {
      const column = COLUMNS.find((name) => cell.classList.contains(`c-${name}`));
      if (!column) continue;
      cell.dataset.sort = column;
      cell.tabIndex = 0;
      cell.setAttribute('role', 'columnheader');
      cell.addEventListener('click', () => this.setSort(nextSort(this.sort, column)));
      cell.addEventListener('keydown', (event) => {
        if (event.key !== 'Enter') return;
        event.preventDefault();
        this.setSort(nextSort(this.sort, column));
      });
    }
    showSort(this.#header, null);
    this.#sizer = viewport.querySelector('.sizer');
    this.#rows = viewport.querySelector('.rows');
    this.#empty = viewport.querySelector('.table-empty');
    this.#store = store;
    this.#rowHeight = rowHeight;
    viewport.addEventListener('scroll', () => {
      this.#stuck = this.#atLiveEdge();
      this.invalidate();
    });
    this.#rows.addEventListener('click', (event) => {
      const address = event.target.closest('.addr');
      if (address?.dataset.ip) {
        this.emit('address', address.dataset.ip);
        return;
      }
      const row = event.target.closest('.row');
      if (row?.dataset.id) this.select(Number(row.dataset.id));
    });
    new ResizeObserver(() => this.invalidate()).observe(viewport);
  }

  get following() {
    return this.#stuck;
  }

  invalidate() {
    this.#frame ||= requestAnimationFrame(() => {
      this.#frame = 0;
      this.#draw();
    });
  }

  // {column, direction} or null: back to arrival order.
  setSort(sort) {
    this.sort = sort;
    this.#sorted = null;
    this.#header.dataset.sorted = sort ? `${sort.column} ${sort.direction}` : '';
    showSort(this.#header, sort);
    this.#stuck = true;
    this.#scrollToEdge();
    this.invalidate();
  }

  setOrder(order) {
    this.order = order;
    this.#stuck = true;
    this.#seenAdded = this.#store.added;
    this.#seenLength = this.#store.length;
    this.#scrollToEdge();
    this.invalidate();
  }

  reset() {
    this.#sorted = null;
    this.#seenAdded = 0;
    this.#seenLength = 0;
    this.#stuck = true;
    this.#viewport.scrollTop = 0;
    this.invalidate();
  }

  // Back to the live edge (the newest packets), following them again.
  follow() {
    this.#stuck = true;
    this.#scrollToEdge();
    this.invalidate();
  }

  select(id) {
    this.selectedId = id;
    this.#stuck = false; // keep the chosen packet in view while others arrive
    this.invalidate();
    this.emit('select', this.#packetById(id));
  }

  // Move the selection by `delta` rows as shown (ArrowDown = +1).
  moveSelection(delta) {
    const shown = this.#shownIndex(this.selectedId);
    const count = this.#store.length;
    if (count === 0) return;
    const next = shown < 0 ? 0 : Math.min(count - 1, Math.max(0, shown + delta));
    const packet = this.#at(next);
    if (!packet) return;
    const top = next * this.#rowHeight;
    const view = this.#viewport;
    if (top < view.scrollTop) view.scrollTop = top;
    else if (top + this.#rowHeight > view.scrollTop + view.clientHeight) {
      view.scrollTop = top + this.#rowHeight - view.clientHeight;
    }
    this.select(packet.id);
  }

  #packetById(id) {
    const i = this.#store.indexOfId(id);
    return i < 0 ? null : this.#store.newest(i);
  }

  #shownIndex(id) {
    if (id === null) return -1;
    if (this.#sorted) return this.#sorted.findIndex((p) => p.id === id);
    const i = this.#store.indexOfId(id);
    if (i < 0) return -1;
    return this.order === 'newest' ? i : this.#store.length - 1 - i;
  }

  #at(index) {
    if (this.#sorted) return this.#sorted[index];
    return this.order === 'newest' ? this.#store.newest(index) : this.#store.oldest(index);
  }

  #atLiveEdge() {
    const view = this.#viewport;
    if (this.order === 'newest' || this.sort) return view.scrollTop < this.#rowHeight / 2;
    return view.scrollTop + view.clientHeight >= view.scrollHeight - this.#rowHeight / 2;
  }

  #scrollToEdge() {
    const view = this.#viewport;
    view.scrollTop = this.order === 'newest' || this.sort ? 0 : view.scrollHeight;
  }

  // Rebuild the sorted list when packets came or went, at most every SORT_EVERY_MS (the draw
  // in between shows the previous one; a packet that fell off the store stays until then).
  #resort() {
    const store = this.#store;
    const at = this.#sortedAt;
    const changed = at.added !== store.added || at.length !== store.length;
    const now = performance.now();
    if (this.#sorted && (!changed || now - at.time < SORT_EVERY_MS)) {
      if (changed) this.invalidate(); // draw again once the rebuild is due
      return;
    }
    const base = [];
    for (let i = 0; i < store.length; i += 1) base.push(this.#baseAt(i));
    this.#sorted = sortItems(base, this.sort, sortKey);
    this.#sortedAt = { added: store.added, length: store.length, time: now };
  }

  #baseAt(index) {
    return this.order === 'newest' ? this.#store.newest(index) : this.#store.oldest(index);
  }

  #draw() {
    const store = this.#store;
    const view = this.#viewport;
    const rowHeight = this.#rowHeight;
    if (store.added < this.#seenAdded) this.#seenAdded = 0; // cleared
    const added = store.added - this.#seenAdded;
    const evicted = Math.max(0, this.#seenLength + added - store.length);
    this.#seenAdded = store.added;
    this.#seenLength = store.length;

    if (this.sort) this.#resort();
    else this.#sorted = null;
    const length = this.#sorted ? this.#sorted.length : store.length;
    this.#sizer.style.height = `${length * rowHeight}px`;
    if (this.#stuck) {
      this.#scrollToEdge();
    } else if (this.sort) {
      // sorted: new packets land anywhere, the view stays where it is
    } else if (this.order === 'newest' && added > 0) {
      view.scrollTop += Math.min(added, store.length) * rowHeight;
    } else if (this.order === 'follow' && evicted > 0) {
      view.scrollTop -= evicted * rowHeight;
    }

    const first = Math.max(0, Math.floor(view.scrollTop / rowHeight));
    const visible = Math.ceil(view.clientHeight / rowHeight) + 1;
    while (this.#pool.length < visible) this.#pool.push(this.#newRow());
    this.#rows.style.transform = `translateY(${first * rowHeight}px)`;
    for (let k = 0; k < this.#pool.length; k += 1) {
      const row = this.#pool[k];
      const packet = k < visible ? this.#at(first + k) : undefined;
      if (packet === undefined) {
        row.hidden = true;
        continue;
      }
      row.hidden = false;
      this.#fill(row, packet);
    }
    this.#empty.hidden = store.length > 0;
    this.#empty.textContent = this.emptyText;
    // "Back to live" matters only when packets are out of view on the live side.
    this.emit('drawn', {
      rows: store.length, following: this.#stuck || this.#atLiveEdge(), sorted: Boolean(this.sort),
    });
  }

  #newRow() {
    const cells = COLUMNS.map((name) => h('span', { class: `c-${name}` }));
    const row = h('div', { class: 'row', role: 'row' }, cells);
    row.cell = Object.fromEntries(COLUMNS.map((name, i) => [name, cells[i]]));
    row.src = h('span', { class: 'addr' });
    row.dst = h('span', { class: 'addr' });
    row.cell.src.append(row.src);
    row.cell.dst.append(row.dst);
    this.#rows.append(row);
    return row;
  }

  #fill(row, p) {
    const label = protocolLabel(p);
    const selected = p.id === this.selectedId;
    row.className = `row ${protocolClass(label)}${selected ? ' selected' : ''}`;
    row.dataset.id = p.id;
    const c = row.cell;
    c.id.textContent = p.id;
    c.time.textContent = clock(p.timestamp);
    c.sensor.textContent = p.sensor ?? '';
    this.#address(row.src, p.src_ip);
    c.sport.textContent = p.src_port ?? '';
    this.#address(row.dst, p.dst_ip);
    c.dport.textContent = p.dst_port ?? '';
    c.proto.textContent = label;
    c.len.textContent = p.length;
    c.flags.textContent = tcpFlags(p.flags);
    c.info.textContent = p.info ?? '';
    c.info.title = p.info ?? '';
  }

  #address(el, ip) {
    if (this.#names) {
      this.#names.fill(el, ip);
      return;
    }
    el.textContent = ip ?? '';
    el.title = ip ?? '';
    el.dataset.ip = ip ?? '';
  }
}
