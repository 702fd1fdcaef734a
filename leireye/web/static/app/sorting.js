// Sorting the console's tables: one comparator for every column of every table.
//
// A click on a column header sorts ascending, a second click descending, a third goes back to
// the table's own order (arrival for packets). Addresses sort as numbers (10.0.0.9 before
// 10.0.0.10; IPv4 before IPv6), empty values last whichever the direction, and ties keep the
// table's own order, so a live table does not shuffle rows that compare equal.

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

// A text that sorts addresses numerically: IPv4 first, then IPv6 (fully expanded).
export function addressKey(ip) {
  const text = String(ip ?? '');
  const v4 = V4.exec(text);
  if (v4) return `4${v4.slice(1).map((o) => o.padStart(3, '0')).join('.')}`;
  if (!text.includes(':')) return `9${text}`;
  const [head, tail = ''] = text.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = text.includes('::')
    ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    : left;
  return `6${groups.map((g) => g.padStart(4, '0')).join(':')}`;
}

function empty(value) {
  return value === null || value === undefined || value === '';
}

// Ascending order of two cell values (numbers as numbers, texts as texts); empty ones last.
export function compareValues(a, b) {
  if (empty(a) || empty(b)) return empty(a) - empty(b);
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

// The next sort state after a click on `column`: ascending, descending, then off.
export function nextSort(sort, column) {
  if (sort?.column !== column) return { column, direction: 'asc' };
  if (sort.direction === 'asc') return { column, direction: 'desc' };
  return null;
}

// `items` sorted by `sort` ({column, direction}) with `keyOf(item, column)`; stable, empty
// values last in both directions. Returns a new array; `items` is left as it was.
export function sortItems(items, sort, keyOf) {
  const sign = sort.direction === 'desc' ? -1 : 1;
  const keyed = items.map((item, index) => ({ item, index, key: keyOf(item, sort.column) }));
  keyed.sort((x, y) => {
    if (empty(x.key) || empty(y.key)) return empty(x.key) - empty(y.key) || x.index - y.index;
    return sign * compareValues(x.key, y.key) || x.index - y.index;
  });
  return keyed.map((k) => k.item);
}

// Mark a header's cells with the sort shown (aria-sort, and an arrow from the CSS).
export function showSort(header, sort) {
  for (const cell of header.querySelectorAll('[data-sort]')) {
    const on = sort?.column === cell.dataset.sort;
    const state = on ? (sort.direction === 'asc' ? 'ascending' : 'descending') : 'none';
    cell.setAttribute('aria-sort', state);
  }
}
