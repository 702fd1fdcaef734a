// The console's live connection: the shared LeirEyeClient (../leireye-client.js) behind the
// small interface the console's views use.
//
//   const conn = new CaptureConnection({ session });
//   conn.on('packets', list)   conn.on('stats', data)   conn.on('status', data)
//   conn.on('dropped', {reason, count})   conn.on('state', {state, attempt, reason})
//   conn.on('subscribed', {filters})
//   conn.start(); await conn.subscribe(filters, since); conn.stop();
//
// LeirEyeClient authenticates with a first `auth` message, reconnects with the spec's backoff
// (1, 2, 5, 10, 30 s), resumes with `since` = the last packet id it delivered, pings every 30 s
// and re-authenticates before its token expires, taking each token from the session (which
// renews it). This module adds what a page needs on top:
// - packets handed over in batches (one call per message burst, not per packet);
// - `subscribe()` as a promise of the filters the server applied, or of its refusal (code,
//   field); after a refusal the previous filters are asked for again, resuming after the last
//   packet shown, since the client stops delivering packets of the old subscription;
// - a connection the client gave up on (refused, too many connections, a token it could not
//   renew) is replaced by a new one after the same backoff: a console stays up all day.

import { Emitter } from './dom.js';
import { BACKOFF_MS, LeirEyeClient, backoffDelay } from '../leireye-client.js';

const REFUSED_PREFIX = 'subscribe refused: ';

export class SubscribeError extends Error {
  constructor({ code, field = null, message }) {
    super(message ?? 'subscription refused');
    this.code = code;
    this.field = field;
  }
}

export class CaptureConnection extends Emitter {
  #session;
  #client = null;
  #filters = {};
  #waiting = []; // subscribe() promises, answered in order by `subscribed` or a refusal
  #batch = [];
  #flushQueued = false;
  #restarts = 0;
  #restartTimer = null;
  #running = false;
  #lastId = null; // kept across replaced clients

  constructor({ session }) {
    super();
    this.#session = session;
  }

  get filters() {
    return this.#filters;
  }

  get lastId() {
    return this.#client?._packets?.cursor.lastId ?? this.#lastId;
  }

  start() {
    if (this.#running) return;
    this.#running = true;
    this.#connect(null);
  }

  stop() {
    this.#running = false;
    clearTimeout(this.#restartTimer);
    this.#client?.close();
    this.#client = null;
    const closed = new SubscribeError({ code: 'closed', message: 'connection closed' });
    for (const waiting of this.#waiting.splice(0)) waiting.reject(closed);
    this.#state('closed');
  }

  // Replace the filters; `since` (a packet id) makes the server replay the matching packets
  // after it first. Resolves with the filters as applied, rejects with a SubscribeError.
  subscribe(filters, since = null) {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject, filters });
      this.#client?.subscribePackets(filters, { since: since ?? this.lastId, batch: true });
    });
  }

  #connect(since) {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const client = new LeirEyeClient(`${scheme}://${location.host}/ws/capture`, {
      getToken: () => this.#session.freshToken(),
      apiUrl: location.origin,
    });
    this.#client = client;
    client.on('packet', (packet) => this.#packet(packet));
    client.on('stats', (data) => this.emit('stats', data));
    client.on('status', (data) => this.emit('status', data));
    client.on('gap', (gap) => this.emit('dropped', { reason: gap.reason, count: gap.count ?? 0 }));
    client.on('subscribed', (message) => this.#subscribed(message));
    client.on('open', () => {
      this.#restarts = 0;
      this.#state('open');
    });
    client.on('close', ({ code, reason }) => {
      this.#state('reconnecting', { reason: reason || `code ${code}` });
    });
    client.on('error', (error) => this.#error(client, error));
    client.subscribeStats();
    // On a restart, resume where the last client stopped (the first subscription of a page is
    // its own subscribe(), with the id its backfill ended at).
    const pending = this.#waiting[this.#waiting.length - 1];
    const restart = this.#restarts > 0;
    if (pending || restart) {
      client.subscribePackets(pending?.filters ?? this.#filters, { since, batch: true });
    }
    this.#state(restart ? 'reconnecting' : 'connecting');
    client.connect().catch(() => {}); // the 'error' listener handles it
  }

  #packet(packet) {
    this.#batch.push(packet);
    this.#lastId = packet.id;
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => {
        this.#flushQueued = false;
        const batch = this.#batch;
        this.#batch = [];
        if (batch.length) this.emit('packets', batch);
      });
    }
  }

  #subscribed(message) {
    if (message.channel !== 'packets') return;
    this.#filters = message.filters ?? {};
    this.emit('subscribed', { filters: this.#filters });
    this.#waiting.shift()?.resolve(this.#filters);
  }

  #error(client, error) {
    if (error.kind === 'subscription') {
      const message = error.message.startsWith(REFUSED_PREFIX)
        ? error.message.slice(REFUSED_PREFIX.length)
        : error.message;
      this.#waiting.shift()?.reject(new SubscribeError({ ...error, message }));
      // The server kept the previous subscription, but the client dropped it: ask again.
      client.subscribePackets(this.#filters, { since: this.lastId, batch: true });
      return;
    }
    if (client !== this.#client || !this.#running) return;
    // The client gave up on this connection: start a new one after the backoff.
    this.#lastId = this.lastId;
    this.#client = null;
    const delayMs = backoffDelay(this.#restarts, BACKOFF_MS);
    this.#restarts += 1;
    this.#state('waiting', { delayMs, reason: error.message, attempt: this.#restarts });
    const renewFirst = error.kind === 'auth' || error.kind === 'token_expired';
    this.#restartTimer = setTimeout(async () => {
      if (renewFirst) {
        try {
          await this.#session.renew();
        } catch {
          return; // the session ended: the page goes back to the login
        }
      }
      if (this.#running) this.#connect(this.#lastId);
    }, delayMs);
  }

  #state(state, extra = {}) {
    this.emit('state', { state, ...extra });
  }
}
