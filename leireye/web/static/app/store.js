// The packets kept in the page: a fixed-capacity ring, newest overwriting oldest.
//
// At thousands of packets per second the page must not grow: only the newest `capacity`
// packets are kept, in a preallocated array. `added` counts every packet ever pushed, so the
// table can tell how many arrived (and how many fell off the end) since it last drew.

export class PacketStore {
  constructor(capacity) {
    this.capacity = capacity;
    this.clear();
  }

  clear() {
    this.items = new Array(this.capacity);
    this.head = 0; // where the next packet goes
    this.length = 0;
    this.added = 0;
  }

  push(list) {
    for (const packet of list) {
      this.items[this.head] = packet;
      this.head = (this.head + 1) % this.capacity;
      if (this.length < this.capacity) this.length += 1;
    }
    this.added += list.length;
  }

  // Older packets (newest first, as the REST API lists them) added behind the oldest kept, as
  // many as there is room for; returns how many were added. `added` is left alone: the table
  // counts it to tell new packets from old.
  pushOlder(list) {
    let taken = 0;
    for (const packet of list) {
      if (this.length >= this.capacity) break;
      this.items[(this.head - this.length - 1 + 2 * this.capacity) % this.capacity] = packet;
      this.length += 1;
      taken += 1;
    }
    return taken;
  }

  // The i-th newest packet (0 = newest).
  newest(i) {
    if (i < 0 || i >= this.length) return undefined;
    return this.items[(this.head - 1 - i + this.capacity) % this.capacity];
  }

  // The i-th oldest packet kept (0 = oldest).
  oldest(i) {
    return this.newest(this.length - 1 - i);
  }

  indexOfId(id) {
    for (let i = 0; i < this.length; i += 1) {
      if (this.newest(i)?.id === id) return i;
    }
    return -1;
  }
}

// Packets received while the table is paused: kept (up to `capacity`) and counted past that.
export class PauseBuffer {
  constructor(capacity) {
    this.capacity = capacity;
    this.items = [];
    this.skipped = 0;
  }

  push(list) {
    this.items.push(...list);
    const over = this.items.length - this.capacity;
    if (over > 0) {
      this.items.splice(0, over);
      this.skipped += over;
    }
  }

  drain() {
    const items = this.items;
    this.items = [];
    return items;
  }
}
