// The console's WebSocket: one connection to /ws/capture that stays up.
//
// This is the browser's own connection layer, written while the shared client module
// (leireye-client.js, issue 6) did not exist yet. It hides behind a small interface so it can be
// swapped for that module:
//
//   const conn = new CaptureConnection({ session });
//   conn.on('packets', list)   conn.on('stats', data)   conn.on('status', data)
//   conn.on('dropped', {reason, count})   conn.on('state', {state, attempt, delayMs, reason})
//   conn.on('subscribed', {filters, resumed})
//   conn.start(); await conn.subscribe(filters, since); conn.reauth(token); conn.stop();
//
// - Opens with a single-use ticket (POST /api/auth/ticket -> ?ticket=); when tickets are not
//   available it connects bare and sends {"type":"auth"} first.
// - Reconnects with the spec's backoff (1, 2, 5, 10, 30 s), reset once a connection is
//   authenticated, and resubscribes with `since` = the newest packet id seen, so the server
//   replays what was missed: no hole, no duplicate (ids above `since` only).
// - Pings every 30 s (the server's idle timeout is 5 min); a ping unanswered for 10 s closes
//   the socket so the reconnect logic takes over a half-open connection.
// - Re-authenticates on the open socket when the session renews its token.
// - Subscribes with batch mode: one `packets` message carries many packets.

import { Emitter } from './dom.js';

export const RECONNECT_DELAYS_MS = [1000, 2000, 5000, 10000, 30000];
export const PING_INTERVAL_MS = 30000;
export const PONG_TIMEOUT_MS = 10000;

const AUTH_CLOSES = new Set([4001, 4003]);
const FATAL_CODES = new Set(['invalid_filter', 'invalid_option', 'invalid_channel']);

export class SubscribeError extends Error {
  constructor(message) {
    super(message.message ?? 'subscription refused');
    this.code = message.code;
    this.field = message.field ?? null;
  }
}

export class CaptureConnection extends Emitter {
  #session;
  #ws = null;
  #running = false;
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  #pingId = 0;
  #filters = {};
  #queued = null; // a subscribe asked for while not connected: sent once authenticated
  #inflight = []; // subscribes sent, answered in order by `subscribed` or `error`
  #authenticated = false;
  lastId = null; // newest packet id received: the `since` of the next resubscribe

  constructor({ session }) {
    super();
    this.#session = session;
  }

  get filters() {
    return this.#filters;
  }

  start() {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#open();
  }

  stop() {
    this.#running = false;
    clearTimeout(this.#retryTimer);
    this.#stopPing();
    const closed = new SubscribeError({ code: 'closed', message: 'connection closed' });
    for (const request of [...this.#inflight, this.#queued]) request?.reject(closed);
    this.#inflight = [];
    this.#queued = null;
    if (this.#ws) {
      this.#ws.onclose = null;
      this.#ws.close(1000, 'bye');
      this.#ws = null;
    }
    this.#state('closed');
  }

  // Replace the filters. Resolves with the filters the server applied, rejects with a
  // SubscribeError (code, field) and leaves the previous subscription in place. `since`
  // (a packet id) makes the server replay the matching packets after it first.
  subscribe(filters, since = null) {
    return new Promise((resolve, reject) => {
      const request = { filters, since, resolve, reject, resume: false };
      if (this.#authenticated) {
        this.#sendSubscribe(request);
      } else {
        this.#queued?.reject(new SubscribeError({ code: 'superseded', message: 'superseded' }));
        this.#queued = request;
      }
    });
  }

  reauth(token) {
    if (this.#authenticated && token) this.#send({ type: 'auth', token });
  }

  async #open() {
    this.#authenticated = false;
    this.#state(this.#attempt === 0 ? 'connecting' : 'reconnecting', { attempt: this.#attempt });
    let ticket = null;
    try {
      ({ ticket } = await this.#session.request('POST', '/api/auth/ticket'));
    } catch (err) {
      if (err.status === 401 || !this.#session.token) {
        this.#retry('not signed in');
        return;
      }
      console.warn('no WebSocket ticket, authenticating with the first message', err);
    }
    if (!this.#running) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = ticket ? `?ticket=${encodeURIComponent(ticket)}` : '';
    const ws = new WebSocket(`${scheme}://${location.host}/ws/capture${query}`);
    this.#ws = ws;
    ws.onopen = () => {
      if (!ticket) this.#send({ type: 'auth', token: this.#session.token });
      this.#startPing();
    };
    ws.onmessage = (event) => this.#receive(event.data);
    ws.onclose = (event) => this.#closed(event);
  }

  #receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (message.type) {
      case 'auth_success':
        if (!this.#authenticated) this.#authenticated = this.#onAuthenticated(message);
        break;
      case 'packets':
        this.#packets(message.data);
        break;
      case 'packet':
        this.#packets([message.data]);
        break;
      case 'subscribed':
        if (message.channel === 'packets') this.#subscribed(message);
        break;
      case 'stats':
        this.emit('stats', message.data);
        break;
      case 'status':
        this.emit('status', message.data);
        break;
      case 'dropped':
        this.emit('dropped', { reason: message.reason, count: message.count });
        break;
      case 'pong':
        clearTimeout(this.#pongTimer);
        break;
      case 'error':
        this.#error(message);
        break;
      case 'auth_error':
        this.emit('auth_error', message);
        break;
      default:
        break;
    }
  }

  #onAuthenticated(message) {
    this.#attempt = 0;
    this.#state('open', { user: message.user });
    // Resubscribe: the filters asked for while away, or the current ones, resuming after the
    // newest packet seen.
    const request = this.#queued ?? {
      filters: this.#filters,
      since: null,
      resume: true,
      resolve() {},
      reject() {},
    };
    this.#queued = null;
    request.since ??= this.lastId;
    this.#sendSubscribe(request);
    return true;
  }

  #sendSubscribe(request) {
    const { filters, since } = request;
    const message = { type: 'subscribe', channel: 'packets', filters, options: { batch: true } };
    if (since !== null && since !== undefined) message.since = since;
    this.#inflight.push(request);
    this.#send(message);
  }

  #subscribed(message) {
    const request = this.#inflight.shift();
    this.#filters = message.filters ?? {};
    this.emit('subscribed', { filters: this.#filters, resumed: Boolean(request?.resume) });
    request?.resolve(this.#filters);
  }

  #error(message) {
    if (FATAL_CODES.has(message.code) && this.#inflight.length > 0) {
      const request = this.#inflight.shift();
      if (request.resume) {
        // The filters that worked before are refused now: carry on without filters.
        this.#sendSubscribe({ ...request, filters: {} });
      }
      request.reject(new SubscribeError(message));
      return;
    }
    this.emit('error', message);
  }

  #packets(list) {
    if (!Array.isArray(list) || list.length === 0) return;
    const newest = list[list.length - 1].id;
    if (this.lastId === null || newest > this.lastId) this.lastId = newest;
    this.emit('packets', list);
  }

  #closed(event) {
    this.#ws = null;
    this.#authenticated = false;
    this.#stopPing();
    // Subscribes left unanswered are asked again on the next connection (the newest one).
    const unanswered = this.#inflight.filter((request) => !request.resume);
    this.#inflight = [];
    if (this.#queued === null && unanswered.length > 0) this.#queued = unanswered.pop();
    for (const request of unanswered) {
      request.reject(new SubscribeError({ code: 'superseded', message: 'superseded' }));
    }
    if (!this.#running) return;
    if (AUTH_CLOSES.has(event.code)) {
      // The token behind this connection is gone: renew it, then reconnect at once.
      this.#session.renew().then(
        () => this.#retry('token renewed', 0),
        () => this.stop(),
      );
      return;
    }
    this.#retry(event.reason || `closed (${event.code})`);
  }

  #retry(reason, delayMs = null) {
    if (!this.#running) return;
    const delay = delayMs ?? RECONNECT_DELAYS_MS[Math.min(this.#attempt, RECONNECT_DELAYS_MS.length - 1)];
    this.#attempt += 1;
    this.#state('waiting', { attempt: this.#attempt, delayMs: delay, reason });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  #startPing() {
    this.#stopPing();
    this.#pingTimer = setInterval(() => {
      this.#pingId += 1;
      this.#send({ type: 'ping', id: this.#pingId });
      clearTimeout(this.#pongTimer);
      this.#pongTimer = setTimeout(() => this.#ws?.close(4000, 'no pong'), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  #stopPing() {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
  }

  #send(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(message));
  }

  #state(state, extra = {}) {
    this.emit('state', { state, ...extra });
  }
}
