// The REST side of the console: log in, keep the access token fresh, call /api with it.
//
// The refresh token lives in sessionStorage (per tab, gone with the tab) so a reload does not
// ask for the password again; the access token only in memory. The access token is renewed at
// three quarters of its lifetime, and the WebSocket client takes each new one (freshToken) to
// re-authenticate before the server's deadline; every renewal is announced ('token'). A 401 on a call triggers one renewal and one
// retry; when renewal fails the session ends ('logout') and the page goes back to the login.

import { Emitter } from './dom.js';

const REFRESH_KEY = 'leireye.refresh_token';
const RENEW_AT = 0.75;
const MIN_RENEW_S = 5;

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: keep the status line
  }
  const detail = body?.detail ?? (response.statusText || `HTTP ${response.status}`);
  return new ApiError(response.status, body?.error_code ?? 'ERROR', String(detail));
}

export function queryString(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

export class Session extends Emitter {
  #access = null;
  #renewAt = 0; // when the access token has lived RENEW_AT of its life (ms since the epoch)
  #refresh = sessionStorage.getItem(REFRESH_KEY);
  #timer = null;
  #renewing = null;
  user = null;

  get token() {
    return this.#access;
  }

  get canResume() {
    return this.#refresh !== null;
  }

  async login(username, password) {
    const response = await fetch('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (!response.ok) throw await errorFrom(response);
    this.#store(await response.json());
    this.user = await this.request('GET', '/api/auth/me');
    return this.user;
  }

  // After a reload: trade the stored refresh token for a new pair.
  async resume() {
    await this.renew();
    this.user = await this.request('GET', '/api/auth/me');
    return this.user;
  }

  // The access token, renewed first when it is past RENEW_AT of its life (timers of a
  // background tab may fire late).
  async freshToken() {
    if (this.#access === null || Date.now() >= this.#renewAt) await this.renew();
    return this.#access;
  }

  renew() {
    // One renewal at a time: the refresh token is single use.
    this.#renewing ??= this.#renew().finally(() => {
      this.#renewing = null;
    });
    return this.#renewing;
  }

  async #renew() {
    if (this.#refresh === null) throw new ApiError(401, 'AUTH_REQUIRED', 'Not signed in');
    const response = await fetch('/api/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: this.#refresh }),
    });
    if (!response.ok) {
      const error = await errorFrom(response);
      if (response.status === 401) this.#end('expired');
      throw error;
    }
    this.#store(await response.json());
    this.emit('token', this.#access);
    return this.#access;
  }

  async logout() {
    const refresh = this.#refresh;
    if (refresh !== null && this.#access !== null) {
      try {
        await this.request('POST', '/api/auth/logout', { body: { refresh_token: refresh } });
      } catch (err) {
        console.warn('logout request failed', err);
      }
    }
    this.#end('signed out');
  }

  // JSON in, JSON out (or a Response with raw: true); ApiError for any non-2xx.
  async request(method, path, { body, raw = false, retry = true } = {}) {
    const headers = { Accept: 'application/json' };
    if (this.#access) headers.Authorization = `Bearer ${this.#access}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    if (response.status === 401 && retry && this.#refresh !== null) {
      await this.renew();
      return this.request(method, path, { body, raw, retry: false });
    }
    if (!response.ok) throw await errorFrom(response);
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }

  #store(tokens) {
    this.#access = tokens.access_token;
    this.#refresh = tokens.refresh_token;
    sessionStorage.setItem(REFRESH_KEY, this.#refresh);
    clearTimeout(this.#timer);
    const seconds = Math.max(MIN_RENEW_S, (tokens.expires_in ?? 60) * RENEW_AT);
    this.#renewAt = Date.now() + seconds * 1000;
    this.#timer = setTimeout(() => {
      this.renew().catch((err) => console.warn('token renewal failed', err));
    }, seconds * 1000);
  }

  #end(reason) {
    clearTimeout(this.#timer);
    const wasIn = this.#access !== null || this.#refresh !== null;
    this.#access = null;
    this.#refresh = null;
    this.user = null;
    sessionStorage.removeItem(REFRESH_KEY);
    if (wasIn) this.emit('logout', reason);
  }
}

export const RANK = { VIEWER: 0, ANALYST: 1, ADMIN: 2 };

export function hasRole(user, role) {
  return (RANK[user?.role] ?? -1) >= RANK[role];
}
