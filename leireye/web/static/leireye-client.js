// LeirEye's client for /ws/capture, as an ES module for browsers and Node (20+).
//
//   import { LeirEyeClient } from '/static/leireye-client.js';
//   const client = new LeirEyeClient('ws://127.0.0.1:8000/ws/capture', { token });
//   client.on('packet', (p) => console.log(p.src_ip, '>', p.dst_ip, p.info));
//   client.on('gap', (g) => console.warn(`missed ${g.count ?? 'some'} packets (${g.reason})`));
//   client.subscribePackets({ protocol: 'TLS' });
//   await client.connect();
//
// The same semantics as the Python client (docs/clients.md): it authenticates with a first
// `auth` message, reconnects after a transient close with the spec's backoff (1, 2, 5, 10, 30 s),
// resumes the packets channel with `since` = the last id received (nothing still in the ring is
// lost or repeated), sends `ping` every 30 s, renews the token before it expires (`getToken`, or
// the refresh API after a password login), and reports what it could not deliver as `gap`
// events. Fatal errors (bad credentials, an expired token it cannot renew, a server that would
// refuse again) are `LeirEyeError`s given to `error` listeners, and reject `connect()` when the
// first connection fails.
//
// `subscribePackets(filters, { format: 'columns' })` asks for the binary batches
// (`packet_columns`, leireye-columns.js), decoded into the same packet objects as JSON.
//
// Node 20 has no global WebSocket without `--experimental-websocket`: pass one
// (`{ WebSocket: (await import('ws')).WebSocket }`). Timers and fetch are injectable too.

import { ColumnsError, decodeColumns, packetsOf } from './leireye-columns.js';

export const BACKOFF_MS = Object.freeze([1000, 2000, 5000, 10000, 30000]);
export const PING_INTERVAL_MS = 30000;

export function backoffDelay(attempt, delays = BACKOFF_MS) {
  return delays[Math.min(Math.max(attempt, 0), delays.length - 1)];
}

/** Milliseconds until a token expiring at `expiresAt` should be renewed: a minute early, or at
 * 80 % of the remaining life for short tokens. */
export function refreshDelay(expiresAt, now, marginMs = 60000) {
  const remaining = expiresAt - now;
  if (remaining <= 0) return 0;
  return Math.max(0, remaining - Math.min(marginMs, remaining * 0.2));
}

/** The last packet id received: refuses repeats and older ids; the `since` of a resume. */
export class ResumeCursor {
  constructor(since = null) {
    this.lastId = since;
  }
  accept(id) {
    if (this.lastId !== null && id <= this.lastId) return false;
    this.lastId = id;
    return true;
  }
}

/** kind: 'auth' | 'token_expired' | 'connection' | 'protocol' | 'subscription'. */
export class LeirEyeError extends Error {
  constructor(message, { kind, closeCode = null, status = null, code = null, field = null } = {}) {
    super(message);
    this.name = 'LeirEyeError';
    Object.assign(this, { kind, closeCode, status, code, field });
  }
}

const REFUSED = new Set([1002, 1003, 1007, 1008, 1009, 4008, 4029]);
const NOT_ANSWERS = new Set([
  'idle_timeout', 'too_many_connections', 'not_reading', 'message_too_big', 'internal_error',
]);

/** 'auth_failed' | 'renew' | 'refused' | 'reconnect' for a close code. */
export function closeOutcome(code) {
  if (code === 4001) return 'auth_failed';
  if (code === 4003) return 'renew';
  if (REFUSED.has(code)) return 'refused';
  return 'reconnect';
}

export function httpBase(wsUrl) {
  const url = new URL(wsUrl);
  const secure = url.protocol === 'wss:' || url.protocol === 'https:';
  return `${secure ? 'https' : 'http'}://${url.host}`;
}

/** A binary frame that is not JSON text: a msgpack map (`packet_columns`), never `{`. */
function isColumns(data) {
  if (typeof data === 'string') return false;
  if (!data.byteLength) return true;
  const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, 1) : new Uint8Array(data, 0, 1);
  return bytes[0] !== 0x7b;
}

export class LeirEyeClient {
  constructor(url, options = {}) {
    this.url = url;
    this.apiUrl = options.apiUrl ?? httpBase(url);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('no WebSocket: pass { WebSocket } (Node 20: the ws package, or --experimental-websocket)');
    }
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.backoff = options.backoff ?? BACKOFF_MS;
    this.pingIntervalMs = options.pingIntervalMs ?? PING_INTERVAL_MS;
    this.reconnect = options.reconnect ?? true;
    this.openTimeoutMs = options.openTimeoutMs ?? 10000;
    this._credentials(options);
    this.user = null;
    this.limits = null;
    this.status = null;
    this.expiresAt = null; // ms since the epoch
    this.connections = 0;
    this.skippedFrames = 0; // binary frames that were not packet_columns
    this._listeners = new Map();
    this._ws = null;
    this._packets = null; // { filters, batch, format, cursor, sent, confirmed, previous }
    this._stats = null; // { interval_ms, confirmed }
    this._pending = [];
    this._timers = new Set();
    this._closed = false;
    this._failed = null;
  }

  _credentials({ token, getToken, username, password }) {
    this._refreshToken = null;
    if (getToken) {
      this._getToken = getToken;
      this._renew = getToken;
    } else if (token) {
      this._getToken = async () => token;
      this._renew = null;
    } else if (username && password !== undefined) {
      this._getToken = () => this._login(username, password);
      this._renew = () => this._refresh(username, password);
    } else {
      throw new TypeError('give token, getToken, or username and password');
    }
  }

  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this._listeners.get(event).delete(listener);
  }

  _emit(event, value) {
    for (const listener of this._listeners.get(event) ?? []) listener(value);
    if (event === 'error' && !this._listeners.get('error')?.size && !this._firstOpen) {
      console.error(`leireye: ${value.message}`);
    }
    if (event === 'gap' && !this._listeners.get('gap')?.size) {
      console.warn(`leireye: gap after packet ${value.after_id}: ${value.count ?? 'unknown'} packets missed (${value.reason})`);
    }
  }

  /** Connect and authenticate; rejects with a LeirEyeError if the first attempt fails. */
  connect() {
    this._closed = false;
    return new Promise((resolve, reject) => {
      this._firstOpen = { resolve, reject };
      this._attempt(0, false);
    });
  }

  close() {
    this._closed = true;
    for (const timer of this._timers) this.clearTimeout(timer);
    this._timers.clear();
    this._ws?.close(1000, 'client closed');
    this._ws = null;
  }

  /** Packets matching `filters` (as in the protocol); `since`: start after this id (default:
   * the ring's newest id now, from /health); `format`: 'json' (the default) or 'columns' (binary
   * batches, always batched; the same packet objects). Replaces an earlier packets subscription. */
  async subscribePackets(filters = {}, { since = null, batch = true, format = 'json' } = {}) {
    if (format !== 'json' && format !== 'columns') throw new TypeError(`format: 'json' or 'columns', not ${format}`);
    if (since === null) since = await this._ringHead();
    // The stream this one replaces, while the server has not yet accepted the new filters: a
    // refused subscribe leaves the server streaming the old one, so the client goes back to it.
    const previous = this._packets?.confirmed ? this._packets : null;
    this._packets = { filters, batch: batch || format === 'columns', format, cursor: new ResumeCursor(since), sent: false, confirmed: false, previous };
    this._subscribe(this._packets);
  }

  unsubscribePackets() {
    this._packets = null;
    this._send({ type: 'unsubscribe', channel: 'packets' });
  }

  subscribeStats({ interval_ms = null } = {}) {
    this._stats = { interval_ms, confirmed: false };
    this._subscribe(this._stats);
  }

  /** `for await (const p of client.packets({ port: 53 }))`: packets, and gap objects
   * (`{ gap: true, reason, count, ... }`) when `gaps: true`. Ends with an error on a fatal one. */
  async *packets(filters = {}, { gaps = false, ...options } = {}) {
    const queue = [];
    let wake = null;
    const push = (item) => { queue.push(item); wake?.(); };
    const off = [
      this.on('packet', (p) => push({ p })),
      this.on('error', (e) => push({ e })),
      ...(gaps ? [this.on('gap', (g) => push({ p: { gap: true, ...g } }))] : []),
    ];
    try {
      await this.subscribePackets(filters, options);
      for (;;) {
        while (!queue.length) await new Promise((resolve) => { wake = resolve; });
        const { p, e } = queue.shift();
        if (e) throw e;
        yield p;
      }
    } finally {
      off.forEach((f) => f());
      this.unsubscribePackets();
    }
  }

  // -- the connection loop -------------------------------------------------------------------

  _later(ms, fn) {
    const timer = this.setTimeout(() => { this._timers.delete(timer); fn(); }, ms);
    this._timers.add(timer);
    return timer;
  }

  _cancel(timer) {
    if (timer === null || timer === undefined) return;
    this.clearTimeout(timer);
    this._timers.delete(timer);
  }

  async _attempt(attempt, renew) {
    if (this._closed) return;
    let token;
    try {
      token = await (renew && this._renew ? this._renew() : this._getToken());
    } catch (error) {
      return this._failure(error, attempt);
    }
    if (this._closed) return;
    this._authError = null;
    const ws = new this.WebSocket(this.url);
    ws.binaryType = 'arraybuffer'; // packet_columns frames (a browser's default is Blob)
    this._ws = ws;
    let opened = false;
    const openTimer = this._later(this.openTimeoutMs, () => ws.close());
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
    ws.onmessage = (event) => {
      if (opened && isColumns(event.data)) return this._binary(event.data);
      let message;
      try {
        message = JSON.parse(typeof event.data === 'string' ? event.data : new TextDecoder().decode(event.data));
      } catch {
        return; // not JSON: not a message of ours
      }
      if (!opened && message.type === 'auth_success') {
        opened = true;
        this._cancel(openTimer);
        this._opened(ws, message);
      } else if (!opened && message.type === 'error') {
        this._authError = new LeirEyeError(`${message.code}: ${message.message}`, { kind: 'protocol' });
      } else if (opened) {
        this._dispatch(message);
      }
    };
    ws.onclose = (event) => {
      this._cancel(openTimer);
      if (this._ws === ws) this._ws = null;
      this._stopKeepalive();
      if (this._closed) return;
      const code = event.code;
      const outcome = closeOutcome(code);
      if (outcome === 'auth_failed') {
        return this._fatal(new LeirEyeError('authentication failed: Invalid or expired token', { kind: 'auth', closeCode: code }));
      }
      if (!opened) {
        if (outcome === 'refused' || this._authError) {
          return this._fatal(this._authError ?? new LeirEyeError(`refused (${code})`, { kind: 'protocol', closeCode: code }));
        }
        return this._failure(new LeirEyeError(`cannot connect to ${this.url} (${code})`, { kind: 'connection', closeCode: code }), attempt);
      }
      if (outcome === 'refused') {
        return this._fatal(new LeirEyeError(`closed ${code}: ${event.reason}`, { kind: 'protocol', closeCode: code }));
      }
      if (outcome === 'renew' && !this._renew) {
        return this._fatal(new LeirEyeError('the token expired and cannot be renewed', { kind: 'token_expired', closeCode: code }));
      }
      this._emit('close', { code, reason: event.reason });
      if (!this.reconnect) return this._fatal(new LeirEyeError(`closed ${code}`, { kind: 'connection', closeCode: code }));
      this._later(backoffDelay(0, this.backoff), () => this._attempt(1, outcome === 'renew'));
    };
    ws.onerror = () => {}; // a close event follows
  }

  _failure(error, attempt) {
    const fatal = !(error instanceof LeirEyeError) || error.kind !== 'connection' || error.status;
    if (fatal || !this.connections || !this.reconnect) return this._fatal(error);
    this._later(backoffDelay(attempt, this.backoff), () => this._attempt(attempt + 1, false));
  }

  _fatal(error) {
    this._failed = error;
    this._closed = true;
    this._ws?.close();
    const first = this._firstOpen;
    this._emit('error', error);
    if (first) {
      this._firstOpen = null;
      first.reject(error);
    }
  }

  _opened(ws, hello) {
    this.connections += 1;
    this._authenticated(hello);
    this._pending = [];
    for (const sub of [this._packets, this._stats]) if (sub) this._subscribe(sub);
    this._startKeepalive(ws);
    this._emit('open', { user: hello.user, connections: this.connections });
    if (this._firstOpen) {
      this._firstOpen.resolve();
      this._firstOpen = null;
    }
  }

  _subscribe(sub) {
    if (!this._ws || this._ws.readyState !== 1 || !this.connections) return; // sent on (re)connect
    let message;
    if (sub === this._stats) {
      message = { type: 'subscribe', channel: 'stats', options: sub.interval_ms ? { interval_ms: sub.interval_ms } : {} };
    } else {
      const since = sub.cursor.lastId;
      if (since === null && sub.sent) {
        this._emit('gap', { reason: 'reconnect', count: null, message: 'disconnected before any packet id was known', after_id: null });
      }
      sub.sent = true;
      const options = sub.format === 'columns' ? { batch: true, format: 'columns' } : { batch: sub.batch };
      message = { type: 'subscribe', channel: 'packets', filters: sub.filters, options, since };
    }
    sub.confirmed = false;
    this._pending.push(sub);
    this._send(message);
  }

  _send(message) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(message));
  }

  /** A binary frame: a `packet_columns` batch, decoded only for a confirmed subscription. */
  _binary(data) {
    const packets = this._packets?.confirmed ? this._packets : null;
    if (!packets) return;
    let batch;
    try {
      batch = packetsOf(decodeColumns(data));
    } catch (error) {
      if (!(error instanceof ColumnsError)) throw error;
      // Not ours (a newer server's message?): skip it like an unknown JSON message, but say so.
      this.skippedFrames += 1;
      console.warn(`leireye: skipped a binary frame: ${error.message}`);
      return;
    }
    for (const p of batch) if (packets.cursor.accept(p.id)) this._emit('packet', p);
  }

  _dispatch(message) {
    const packets = this._packets?.confirmed ? this._packets : null;
    switch (message.type) {
      case 'packet':
      case 'packets':
        if (!packets) return;
        for (const p of message.type === 'packets' ? message.data : [message.data]) {
          if (packets.cursor.accept(p.id)) this._emit('packet', p);
        }
        return;
      case 'dropped':
        if (packets) this._emit('gap', { reason: message.reason, count: message.count, message: message.message, after_id: packets.cursor.lastId });
        return;
      case 'stats':
        if (this._stats) this._emit('stats', message.data);
        return;
      case 'status':
        this.status = message.data;
        this._emit('status', message.data);
        return;
      case 'subscribed': {
        const sub = this._pending.shift();
        if (sub) {
          sub.confirmed = true;
          sub.previous = null;
        }
        this._emit('subscribed', message);
        return;
      }
      case 'auth_success':
        this._authenticated(message);
        return;
      case 'pong':
        this._ponged = message.id;
        return;
      case 'error':
        if (!NOT_ANSWERS.has(message.code) && this._pending.length) {
          const sub = this._pending.shift();
          if (sub === this._packets && sub.previous) this._packets = sub.previous; // still streamed
          if (sub) sub.previous = null;
          this._emit('error', new LeirEyeError(`subscribe refused: ${message.message}`, { kind: 'subscription', code: message.code, field: message.field ?? null }));
        }
        return;
      default:
    }
  }

  // -- keep-alive and token renewal ----------------------------------------------------------

  _authenticated(message) {
    this.user = message.user;
    this.limits = message.limits;
    this.expiresAt = message.expires_at ? Date.parse(message.expires_at) : null;
    this._cancel(this._renewTimer);
    if (this.expiresAt !== null && this._renew) {
      this._renewTimer = this._later(refreshDelay(this.expiresAt, Date.now()), () => this._renewNow());
    }
  }

  async _renewNow() {
    try {
      const token = await this._renew();
      this._send({ type: 'auth', token });
    } catch (error) {
      console.warn(`leireye: could not renew the token: ${error.message}`); // 4003 decides
    }
  }

  _startKeepalive(ws) {
    let sent = 0;
    this._ponged = 0;
    const tick = () => {
      if (sent && this._ponged !== sent) return ws.close(1000, 'no pong');
      sent += 1;
      this._send({ type: 'ping', id: sent });
      this._pingTimer = this._later(this.pingIntervalMs, tick);
    };
    this._pingTimer = this._later(this.pingIntervalMs, tick);
  }

  _stopKeepalive() {
    this._cancel(this._pingTimer);
    this._cancel(this._renewTimer);
  }

  // -- HTTP ----------------------------------------------------------------------------------

  async _post(path, body) {
    let response;
    try {
      response = await this.fetch(`${this.apiUrl}${path}`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
    } catch (error) {
      throw new LeirEyeError(`cannot reach ${this.apiUrl}: ${error.message}`, { kind: 'connection' });
    }
    const answer = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) {
      throw new LeirEyeError(`authentication failed: ${answer.detail ?? response.statusText}`, { kind: 'auth', status: response.status });
    }
    if (!response.ok) {
      throw new LeirEyeError(`${path}: HTTP ${response.status}: ${answer.detail ?? ''}`, { kind: 'connection', status: response.status });
    }
    return answer;
  }

  async _login(username, password) {
    const pair = await this._post('/api/auth/login', { username, password });
    this._refreshToken = pair.refresh_token;
    return pair.access_token;
  }

  async _refresh(username, password) {
    if (!this._refreshToken) return this._login(username, password);
    try {
      const pair = await this._post('/api/auth/refresh', { refresh_token: this._refreshToken });
      this._refreshToken = pair.refresh_token;
      return pair.access_token;
    } catch (error) {
      if (error.kind === 'auth') return this._login(username, password);
      throw error;
    }
  }

  async _ringHead() {
    try {
      // /health shows the ring's position only to a user: send the token.
      const token = await this._getToken();
      const response = await this.fetch(`${this.apiUrl}/health`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      const last = (await response.json())?.ring?.last_id;
      return Number.isInteger(last) && last >= 0 ? last : null;
    } catch {
      return null;
    }
  }
}
