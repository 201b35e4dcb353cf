/**
 * SPARKS Presence — the reference web client. One ES module, no dependencies, no build step:
 *
 *   import { PresenceClient } from '/static/presence/client.js';
 *   const client = new PresenceClient({ getAuth: () => null });   // null: the session cookie
 *   client.addEventListener('me', (e) => show(e.detail));          // my presence, as the server decides it
 *   client.addEventListener('peer', (e) => update(e.detail));      // one colleague's change
 *   await client.start();
 *
 * What it does once started:
 * - reads `GET /api/v1/config`; in classic mode (the server does not aggregate) it does nothing
 *   more and reports the connection state `classic`;
 * - signs this browser in as a device (`POST /api/v1/devices`) under an installation id kept in
 *   storage, and numbers every signal with a `seq` that keeps increasing across reloads;
 * - reports activity (pointer, keyboard, touch; throttled), idle after a quiet time, the page's
 *   visibility, the network going on and off, and calls and meetings (`setCall`, `setMeeting`);
 * - sends a heartbeat every `heartbeat_interval_seconds`, over the websocket when it is open and
 *   over REST otherwise;
 * - takes colleagues' presence live from `/ws/presence/`, or from the SSE stream when the server
 *   prefers it or websockets keep failing; reconnects with capped exponential backoff and jitter;
 * - obeys `Retry-After` (REST 429 and 503) and the websocket's `retry_after`.
 *
 * Public API (all of it on `PresenceClient`, an `EventTarget`):
 * - `start()`, `stop()`, `signOut()` (stops and signs the device out)
 * - `setStatus(status, {message, until | durationSeconds})`, `clearStatus()`
 * - `setCall(boolean)`, `setMeeting(boolean)`
 * - `subscribe(userIds | null)`: only these colleagues (null: the whole organization)
 * - getters `me`, `peers`, `connection`, `config`, `deviceId`
 * - events (`CustomEvent`, payload in `detail`): `me`, `peer`, `peers`, `connection`
 *   (`{state: 'connecting'|'open'|'closed'|'classic', transport: 'ws'|'sse'|'rest'|null, retryInMs?}`)
 *   and `error` (`{error, detail, status?, retryAfter?}`)
 *
 * Every clock, network and DOM dependency is an option (see `PresenceClientOptions`), with the
 * browser's globals as defaults, so that the whole loop runs under test without a browser.
 */

/** @typedef {'available'|'busy'|'away'|'dnd'|'offline'} Status */

/**
 * My presence, as `GET /api/v1/me/presence` and every signal's answer give it.
 * @typedef {object} Presence
 * @property {Status} status
 * @property {string} activity
 * @property {string|null} status_msg
 * @property {string|null} [last_active]
 * @property {number|null} last_active_ago  milliseconds
 * @property {boolean} currently_active
 * @property {string} [reason]
 */

/**
 * A colleague, as in `GET /api/v1/peers` and the live snapshot (a change omits `display_name`).
 * @typedef {object} Peer
 * @property {string} user_id
 * @property {string} [display_name]
 * @property {Status} status
 * @property {string} activity
 * @property {string|null} status_msg
 * @property {number|null} last_active_ago
 * @property {boolean} currently_active
 */

/**
 * What `getAuth` answers: nothing for the session cookie, a token (sent with `tokenScheme`), or a
 * ready `Authorization` header value such as `"Token 9944b0…"` or `"Bearer eyJ…"`.
 * @typedef {null|undefined|string|{token: string, scheme?: 'Bearer'|'Token'}|{authorization: string}} Auth
 */

/**
 * @typedef {object} PresenceClientOptions
 * @property {() => Auth|Promise<Auth>} [getAuth]  asked before every request and connection, so that
 *   an app can hand out a refreshed token; default: the session cookie
 * @property {'Bearer'|'Token'} [tokenScheme]  for `{token}`: `Bearer` (an organization account's
 *   access token, the default) or `Token` (a DRF API token)
 * @property {string} [baseUrl]  the server's origin, e.g. `https://presence.example.com`; default: this page's
 * @property {string} [wsUrl]  the websocket's URL when it is not `baseUrl` + `/ws/presence/`
 * @property {string} [label]  the device's name in the user's device list
 * @property {string} [userId]  my user id: my own changes on the live stream then update `me`, and are no `peer`
 * @property {number} [activityThrottleSeconds]  at most one `active` report per this many seconds (15)
 * @property {number} [idleAfterSeconds]  quiet time before `idle`; default: the server's idle timeout
 * @property {number} [backoffBaseMs]  first reconnection delay (1000)
 * @property {number} [backoffMaxMs]  longest reconnection delay (60000)
 * @property {number} [wsFailuresBeforeSse]  websockets that fail to open before SSE is used instead (2)
 * @property {number} [ackTimeoutMs]  a websocket that leaves signals unanswered this long is replaced (15000)
 * @property {string} [storagePrefix]  prefix of the storage keys ('sparks.presence.')
 * @property {typeof fetch} [fetch]
 * @property {typeof WebSocket} [WebSocket]
 * @property {typeof EventSource} [EventSource]
 * @property {(fn: () => void, ms: number) => any} [setTimeout]
 * @property {(handle: any) => void} [clearTimeout]
 * @property {() => number} [now]  milliseconds
 * @property {() => number} [random]  in [0, 1), for the jitter
 * @property {() => string} [randomUUID]
 * @property {Pick<Storage, 'getItem'|'setItem'|'removeItem'>} [storage]
 * @property {EventTarget & {visibilityState?: string, cookie?: string}} [document]
 * @property {EventTarget} [window]  where `online` and `offline` are heard
 * @property {{onLine?: boolean}} [navigator]
 * @property {{protocol: string, host: string}} [location]
 */

const API = '/api/v1';
const WS_PATH = '/ws/presence/';
const SUBPROTOCOL = 'sparks.presence.v1';
const WS_OPEN = 1;
const MAX_SIGNALS = 100;
const INPUT_EVENTS = ['pointerdown', 'pointermove', 'keydown', 'touchstart', 'wheel'];
const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

// The websocket's close codes (4000 + the HTTP status the REST API would answer).
const CLOSE_NOT_AUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;
const CLOSE_TOO_FAR_BEHIND = 4408;
const CLOSE_CLASSIC = 4409;
const CLOSE_NO_ACK = 4000;

/** An answer of the API that is not a success, or a request that never reached it (`status` 0). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {{error?: string, detail?: string, retry_after?: number}|null} body
   * @param {number|null} retryAfter  seconds, from `Retry-After` or the body
   */
  constructor(status, body, retryAfter = null) {
    super(body?.detail || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.code = body?.error || (status === 0 ? 'network_error' : `http_${status}`);
    this.retryAfter = retryAfter;
  }
}

/**
 * A reconnection delay: exponential, capped, and jittered (half fixed, half random) so that
 * clients dropped together by a restart do not all come back at the same instant.
 * @param {number} attempt  0 for the first retry
 * @param {{baseMs?: number, maxMs?: number, random?: () => number}} [options]
 */
export function backoffDelay(attempt, { baseMs = 1000, maxMs = 60000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Seconds to wait from a `Retry-After` header (seconds or an HTTP date) or an error body. */
function retryAfterOf(response, body, now) {
  const header = response.headers.get('Retry-After');
  if (header) {
    const seconds = Number(header);
    if (Number.isFinite(seconds)) return Math.max(0, seconds);
    const date = Date.parse(header);
    if (!Number.isNaN(date)) return Math.max(0, (date - now) / 1000);
  }
  return typeof body?.retry_after === 'number' ? body.retry_after : null;
}

/** `{scheme, value}` from what `getAuth` answered, or null for the session. */
function credentialOf(auth, defaultScheme) {
  if (!auth) return null;
  if (typeof auth === 'string') auth = { token: auth };
  let scheme;
  let value;
  if (auth.authorization) {
    [scheme, value] = auth.authorization.trim().split(/\s+/, 2);
  } else if (auth.token) {
    [scheme, value] = [auth.scheme || defaultScheme, auth.token];
  } else {
    return null;
  }
  return { scheme: scheme.toLowerCase() === 'token' ? 'Token' : 'Bearer', value };
}

function cookieValue(cookies, name) {
  for (const part of (cookies || '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return null;
}

/** A v4 UUID; `crypto.randomUUID` exists in secure contexts only (https, localhost). */
function randomUUID() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** localStorage, or memory where it is missing or refused (storage disabled, some private modes). */
function defaultStorage() {
  try {
    if (globalThis.localStorage) return globalThis.localStorage;
  } catch {
    // reading it throws when the browser forbids storage
  }
  return memoryStorage();
}

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
  };
}

export class PresenceClient extends EventTarget {
  /** @param {PresenceClientOptions} [options] */
  constructor(options = {}) {
    super();
    const g = globalThis;
    this._opt = {
      getAuth: () => null,
      tokenScheme: 'Bearer',
      baseUrl: '',
      label: 'Web browser',
      activityThrottleSeconds: 15,
      backoffBaseMs: 1000,
      backoffMaxMs: 60000,
      wsFailuresBeforeSse: 2,
      ackTimeoutMs: 15000,
      storagePrefix: 'sparks.presence.',
      fetch: g.fetch?.bind(g),
      WebSocket: g.WebSocket,
      EventSource: g.EventSource,
      setTimeout: g.setTimeout?.bind(g),
      clearTimeout: g.clearTimeout?.bind(g),
      now: () => Date.now(),
      random: Math.random,
      randomUUID,
      storage: defaultStorage(),
      document: g.document,
      window: g.window,
      navigator: g.navigator,
      location: g.location,
      ...options,
    };
    this._reset();
    this._config = null;
    this._me = null;
    this._peers = new Map();
    this._connection = { state: 'closed', transport: null };
    this._inCall = false;
    this._inMeeting = false;
    this._userIds = null;
    this._listeners = [];
  }

  _reset() {
    this._running = false;
    this._deviceId = null;
    this._timers = new Set();
    this._pending = new Map(); // signal type → value: only the latest of each type matters
    this._inflight = null;
    this._holdUntil = 0;
    this._sendFailures = 0;
    this._attempts = 0;
    this._wsFailures = 0;
    this._useSse = false;
    this._ws = null;
    this._sse = null;
    this._snapshot = null;
    this._requestId = 0;
    this._idle = false;
    this._lastInputAt = 0;
    this._activeReportedAt = 0;
  }

  // --- Public API ---------------------------------------------------------------------------

  /** My presence as the server last answered it, or null. @returns {Presence|null} */
  get me() {
    return this._me;
  }

  /** The colleagues watched, as of the last snapshot and changes since. @returns {Peer[]} */
  get peers() {
    return [...this._peers.values()];
  }

  /** @returns {{state: string, transport: string|null, retryInMs?: number}} */
  get connection() {
    return this._connection;
  }

  /** `GET /api/v1/config` as read by `start()`, or null before. */
  get config() {
    return this._config;
  }

  /** @returns {string|null} */
  get deviceId() {
    return this._deviceId;
  }

  /**
   * Read the config, sign the device in, start reporting and watching. Resolves once the device
   * is signed in (or classic mode is known); retries on its own until then, or until `stop()`.
   */
  async start() {
    if (this._running) return;
    this._running = true;
    this._setConnection('connecting', null);
    const config = await this._retrying(() => this._request('GET', '/config'));
    if (!this._running) return;
    this._config = config;
    if (!config.aggregator) {
      this._running = false;
      this._setConnection('classic', null);
      return;
    }
    this._useSse = Boolean(config.sse);
    if (!(await this._register())) return;
    this._listen();
    this._armHeartbeat();
    this._armIdle(this._idleAfterMs());
    this._connectLive();
  }

  /** Stop reporting and watching; the device stays signed in and times out on the server. */
  stop() {
    const wasRunning = this._running;
    this._running = false;
    for (const handle of this._timers) this._opt.clearTimeout(handle);
    for (const [target, type, fn] of this._listeners) target.removeEventListener(type, fn, true);
    this._listeners = [];
    this._closeLive();
    const pending = this._pending;
    this._reset();
    this._pending = pending;
    if (wasRunning) this._setConnection('closed', null);
  }

  /** Stop, and sign this device out (`DELETE /api/v1/devices/{id}`). */
  async signOut() {
    const deviceId = this._deviceId;
    this.stop();
    this._pending.clear();
    if (!deviceId) return;
    try {
      await this._request('DELETE', `/devices/${encodeURIComponent(deviceId)}`);
    } catch (error) {
      if (error.status !== 404) throw error; // 404: signed out already
    }
  }

  /**
   * Set my manual status; resolves with my presence. Rejects with an `ApiError` (its `retryAfter`
   * set on a 429).
   * @param {Status} status
   * @param {{message?: string, until?: Date|string, durationSeconds?: number}} [options]
   * @returns {Promise<Presence>}
   */
  async setStatus(status, { message, until, durationSeconds } = {}) {
    const body = { status };
    if (message !== undefined) body.message = message;
    if (until !== undefined) body.until = until instanceof Date ? until.toISOString() : until;
    if (durationSeconds !== undefined) body.duration_seconds = Math.round(durationSeconds);
    return this._updateMe(await this._request('PUT', '/me/status', body));
  }

  /** Clear my manual status; resolves with my presence. @returns {Promise<Presence>} */
  async clearStatus() {
    return this._updateMe(await this._request('DELETE', '/me/status'));
  }

  /** @param {boolean} inCall */
  setCall(inCall) {
    this._inCall = Boolean(inCall);
    this._signal('call', this._inCall ? 'start' : 'end');
  }

  /** @param {boolean} inMeeting */
  setMeeting(inMeeting) {
    this._inMeeting = Boolean(inMeeting);
    this._signal('meeting', this._inMeeting ? 'start' : 'end');
  }

  /**
   * Watch only these colleagues (null: the whole organization again); kept across reconnections.
   * @param {string[]|null} userIds
   */
  subscribe(userIds) {
    this._userIds = userIds ? [...userIds] : null;
    if (this._ws?.readyState === WS_OPEN) this._sendSubscription();
    else if (this._sse) this._reconnectNow(); // the SSE stream's subscription is in its URL
  }

  // --- Events -------------------------------------------------------------------------------

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setConnection(state, transport, extra = {}) {
    this._connection = { state, transport, ...extra };
    this._emit('connection', this._connection);
  }

  _error(error) {
    const detail =
      error instanceof ApiError
        ? { error: error.code, detail: error.message, status: error.status, retryAfter: error.retryAfter }
        : { error: error.error || 'client_error', detail: error.detail || error.message || String(error), ...error };
    this._emit('error', detail);
  }

  _updateMe(presence) {
    if (presence && typeof presence.status === 'string') {
      const { signals_applied: _a, signals_ignored: _i, type: _t, id: _id, ...fields } = presence;
      this._me = { ...this._me, ...fields };
      this._emit('me', this._me);
    }
    return this._me;
  }

  // --- Timers -------------------------------------------------------------------------------

  /** A timer that `stop()` cancels. */
  _after(ms, fn) {
    const handle = this._opt.setTimeout(() => {
      this._timers.delete(handle);
      fn();
    }, Math.max(0, ms));
    this._timers.add(handle);
    return handle;
  }

  _cancel(handle) {
    if (handle == null) return;
    this._opt.clearTimeout(handle);
    this._timers.delete(handle);
  }

  _sleep(ms) {
    return new Promise((resolve) => this._after(ms, resolve));
  }

  _backoff(attempt) {
    return backoffDelay(attempt, { baseMs: this._opt.backoffBaseMs, maxMs: this._opt.backoffMaxMs, random: this._opt.random });
  }

  // --- REST ---------------------------------------------------------------------------------

  async _headers(method, hasBody) {
    const headers = { Accept: 'application/json' };
    if (hasBody) headers['Content-Type'] = 'application/json';
    const credential = credentialOf(await this._opt.getAuth(), this._opt.tokenScheme);
    if (credential) {
      headers.Authorization = `${credential.scheme} ${credential.value}`;
    } else if (UNSAFE_METHODS.has(method)) {
      // The API checks CSRF on requests signed in with the session (DRF's SessionAuthentication).
      const csrf = cookieValue(this._opt.document?.cookie, 'csrftoken');
      if (csrf) headers['X-CSRFToken'] = csrf;
    }
    return headers;
  }

  /** The session cookie goes along to this page's origin, or to `baseUrl`'s when one is set. */
  _credentials() {
    return this._opt.baseUrl ? 'include' : 'same-origin';
  }

  /** One API request: the parsed JSON answer, or an `ApiError`. */
  async _request(method, path, body, { keepalive = false } = {}) {
    const init = { method, headers: await this._headers(method, body !== undefined), credentials: this._credentials() };
    if (body !== undefined) init.body = JSON.stringify(body);
    // A signal sent as the page goes away (hidden) still reaches the server.
    if (keepalive) init.keepalive = true;
    let response;
    try {
      response = await this._opt.fetch(`${this._opt.baseUrl}${API}${path}`, init);
    } catch (error) {
      throw new ApiError(0, { error: 'network_error', detail: String(error?.message || error) });
    }
    const text = response.status === 204 ? '' : await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: `http_${response.status}`, detail: text.slice(0, 200) };
    }
    if (!response.ok) throw new ApiError(response.status, data, retryAfterOf(response, data, this._opt.now()));
    return data;
  }

  /**
   * `call()` until it succeeds, waiting as the server says (`Retry-After`) or with backoff;
   * undefined once stopped or in classic mode (409).
   */
  async _retrying(call) {
    for (let attempt = 0; this._running; attempt++) {
      try {
        return await call();
      } catch (error) {
        if (!this._running) return undefined;
        if (error.status === 409) {
          this.stop();
          this._setConnection('classic', null);
          return undefined;
        }
        this._error(error);
        const wait = error.retryAfter != null ? error.retryAfter * 1000 : this._backoff(attempt);
        await this._sleep(wait);
      }
    }
    return undefined;
  }

  // --- The device ---------------------------------------------------------------------------

  _key(name) {
    return this._opt.storagePrefix + name;
  }

  _installationId() {
    const storage = this._opt.storage;
    let id = storage.getItem(this._key('installation'));
    if (!id) {
      id = this._opt.randomUUID();
      storage.setItem(this._key('installation'), id);
    }
    return id;
  }

  /**
   * The next `seq`. The server restarts a device's sequence when it signs in again, so this need
   * not survive a reload; it does because the tabs of one browser share the installation, hence
   * the device, and their signals must stay in one order.
   */
  _nextSeq() {
    const storage = this._opt.storage;
    const stored = Number(storage.getItem(this._key('seq'))) || 0;
    const seq = Math.max(stored, this._seq || 0) + 1;
    this._seq = seq;
    storage.setItem(this._key('seq'), String(seq));
    return seq;
  }

  /** Sign in (again); false once stopped. Signing in resets the device on the server. */
  async _register() {
    const body = { installation_id: this._installationId(), label: this._opt.label };
    const device = await this._retrying(() => this._request('POST', '/devices', body));
    if (!device || !this._running) return false;
    this._deviceId = device.device_id;
    this._queueSessionState();
    this._flush();
    return true;
  }

  /** What a fresh sign-in forgot: the server starts from visible, active, online, no call. */
  _queueSessionState() {
    const visibility = this._opt.document?.visibilityState;
    if (visibility) this._queue('visibility', visibility === 'hidden' ? 'hidden' : 'visible');
    if (this._opt.navigator?.onLine === false) this._queue('network', 'offline');
    if (this._idle) this._queue('activity', 'idle');
    if (this._inCall) this._queue('call', 'start');
    if (this._inMeeting) this._queue('meeting', 'start');
  }

  // --- Signals ------------------------------------------------------------------------------

  _queue(type, value = null) {
    this._pending.delete(type); // re-inserted last: the order of the latest changes is kept
    this._pending.set(type, value);
  }

  _signal(type, value) {
    this._queue(type, value);
    this._flush();
  }

  _hold(ms) {
    this._holdUntil = Math.max(this._holdUntil, this._opt.now() + ms);
    this._cancel(this._holdTimer);
    this._holdTimer = this._after(this._holdUntil - this._opt.now(), () => this._flush());
  }

  /** Send what is pending: one batch at a time, over the websocket when open, else REST. */
  _flush() {
    if (!this._running || !this._deviceId || this._inflight || this._pending.size === 0) return;
    if (this._opt.now() < this._holdUntil) return; // the hold's timer flushes
    const entries = [...this._pending].slice(0, MAX_SIGNALS);
    for (const [type] of entries) this._pending.delete(type);
    const signals = entries.map(([type, value]) => {
      const signal = { type, seq: this._nextSeq() };
      if (value !== null) signal.value = value;
      return signal;
    });
    if (entries.some(([type, value]) => type === 'activity' && value === 'active')) {
      this._activeReportedAt = this._opt.now();
    }
    const batch = { id: ++this._requestId, entries, signals };
    this._inflight = batch;
    if (this._ws?.readyState === WS_OPEN) this._sendOverWs(batch);
    else this._sendOverRest(batch);
  }

  _sendOverWs(batch) {
    batch.ws = this._ws;
    const message = { type: 'signals', id: batch.id, device_id: this._deviceId, signals: batch.signals };
    this._ws.send(JSON.stringify(message));
    // A socket that leaves signals unanswered is half-open: replace it rather than wait.
    batch.timer = this._after(this._opt.ackTimeoutMs, () => {
      if (this._inflight === batch) batch.ws.close(CLOSE_NO_ACK, 'no ack');
    });
  }

  async _sendOverRest(batch) {
    const path = `/devices/${encodeURIComponent(this._deviceId)}/signals`;
    try {
      const answer = await this._request('POST', path, { signals: batch.signals }, { keepalive: true });
      this._sent(batch, answer);
    } catch (error) {
      this._failed(batch, error);
    }
  }

  _sent(batch, answer) {
    if (this._inflight !== batch) return;
    this._cancel(batch.timer);
    this._inflight = null;
    this._sendFailures = 0;
    this._updateMe(answer);
    this._flush();
  }

  /** @param {{status?: number, code?: string, retryAfter?: number|null}} error */
  _failed(batch, error) {
    if (this._inflight !== batch) return;
    this._cancel(batch.timer);
    this._inflight = null;
    const code = error.code || error.error;
    if (error.status === 400 || code === 'validation_error') {
      this._error(error); // a batch the server will never take: dropped, not retried
      this._flush();
      return;
    }
    this._requeue(batch);
    if (!this._running) return;
    if (error.status === 404 || code === 'not_found') {
      this._reRegister(); // signed out meanwhile (by an admin, another tab)
    } else if (error.status === 409) {
      this.stop();
      this._setConnection('classic', null);
    } else if (error.retryAfter != null) {
      this._error(error);
      this._hold(error.retryAfter * 1000);
    } else {
      this._error(error);
      this._hold(this._backoff(this._sendFailures++));
    }
  }

  /** A batch sent on a socket that closed: its answer will never come; sent again by REST or the next socket. */
  _abandon(ws) {
    const batch = this._inflight;
    if (!batch || batch.ws !== ws) return;
    this._cancel(batch.timer);
    this._inflight = null;
    this._requeue(batch);
    this._flush();
  }

  /** Put a batch that did not go through back, before anything newer of the same type. */
  _requeue(batch) {
    const newer = this._pending;
    this._pending = new Map(batch.entries.filter(([type]) => !newer.has(type)));
    for (const [type, value] of newer) this._pending.set(type, value);
  }

  async _reRegister() {
    if (this._registering) return;
    this._registering = true;
    this._deviceId = null;
    try {
      await this._register();
    } finally {
      this._registering = false;
    }
  }

  // --- Heartbeat, activity, visibility, network --------------------------------------------

  _heartbeatMs() {
    return (this._config?.heartbeat_interval_seconds || 30) * 1000;
  }

  _idleAfterMs() {
    const seconds = this._opt.idleAfterSeconds ?? this._config?.idle_timeout_seconds ?? 300;
    return seconds * 1000;
  }

  _armHeartbeat() {
    this._after(this._heartbeatMs(), () => {
      this._queue('heartbeat');
      // Input the throttle held back is reported with the beat, so activity is never staler.
      if (!this._idle && this._lastInputAt > this._activeReportedAt) this._queue('activity', 'active');
      this._flush();
      this._armHeartbeat();
    });
  }

  /** Check for idleness once the quiet time may have passed (not one timer per mouse move). */
  _armIdle(ms) {
    this._cancel(this._idleTimer);
    this._idleTimer = this._after(ms, () => {
      const quiet = this._opt.now() - this._lastInputAt;
      const idleAfter = this._idleAfterMs();
      if (quiet < idleAfter) {
        this._armIdle(idleAfter - quiet);
      } else {
        this._idle = true;
        this._idleTimer = null;
        this._signal('activity', 'idle');
      }
    });
  }

  _onInput() {
    const now = this._opt.now();
    this._lastInputAt = now;
    if (this._idle) {
      this._idle = false;
      this._armIdle(this._idleAfterMs());
      this._signal('activity', 'active');
    } else if (now - this._activeReportedAt >= this._opt.activityThrottleSeconds * 1000) {
      this._signal('activity', 'active');
    }
  }

  _onVisibility() {
    this._signal('visibility', this._opt.document.visibilityState === 'hidden' ? 'hidden' : 'visible');
  }

  _onNetwork(online) {
    this._signal('network', online ? 'online' : 'offline');
    if (online && this._connection.state !== 'open') this._reconnectNow();
  }

  _on(target, type, fn) {
    if (!target?.addEventListener) return;
    target.addEventListener(type, fn, true);
    this._listeners.push([target, type, fn]);
  }

  _listen() {
    const { document, window } = this._opt;
    const onInput = () => this._onInput();
    this._lastInputAt = this._opt.now(); // signing in counts as activity on the server too
    this._activeReportedAt = this._lastInputAt;
    for (const type of INPUT_EVENTS) this._on(document, type, onInput);
    this._on(document, 'visibilitychange', () => this._onVisibility());
    this._on(window, 'online', () => this._onNetwork(true));
    this._on(window, 'offline', () => this._onNetwork(false));
  }

  // --- Live: websocket or SSE ---------------------------------------------------------------

  _scheduleReconnect(minMs = 0) {
    if (!this._running) return;
    const delay = Math.max(minMs, this._backoff(this._attempts++));
    this._setConnection('closed', this._useSse ? 'sse' : 'ws', { retryInMs: delay });
    this._cancel(this._reconnectTimer);
    this._reconnectTimer = this._after(delay, () => this._connectLive());
  }

  _reconnectNow() {
    if (!this._running) return;
    this._closeLive();
    this._cancel(this._reconnectTimer);
    this._reconnectTimer = this._after(0, () => this._connectLive());
  }

  _closeLive() {
    const ws = this._ws;
    const sse = this._sse;
    this._ws = null;
    this._sse = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000);
      this._abandon(ws);
    }
    sse?.close();
  }

  async _connectLive() {
    if (!this._running) return;
    if (!this._opt.WebSocket) this._useSse = true;
    const transport = this._useSse ? 'sse' : 'ws';
    this._setConnection('connecting', transport);
    let credential;
    try {
      credential = credentialOf(await this._opt.getAuth(), this._opt.tokenScheme);
    } catch (error) {
      this._error(error);
      this._scheduleReconnect();
      return;
    }
    if (!this._running) return;
    if (transport === 'ws') this._openWs(credential);
    else if (credential || !this._opt.EventSource) this._openStream(credential);
    else this._openEventSource();
  }

  _wsUrl() {
    if (this._opt.wsUrl) return this._opt.wsUrl;
    const base = this._opt.baseUrl ? new URL(this._opt.baseUrl) : this._opt.location;
    return `${base.protocol === 'https:' ? 'wss:' : 'ws:'}//${base.host}${WS_PATH}`;
  }

  _openWs(credential) {
    // Browsers cannot set headers on a websocket: a token goes as a subprotocol, beside the one
    // the server selects, so that the token is not echoed back.
    const protocols = [SUBPROTOCOL];
    if (credential) protocols.push(`${credential.scheme.toLowerCase()}.${credential.value}`);
    const ws = new this._opt.WebSocket(this._wsUrl(), protocols);
    let opened = false;
    this._ws = ws;
    ws.onopen = () => {
      opened = true;
      this._liveOpened('ws');
      if (this._userIds) this._sendSubscription();
      this._flush();
    };
    ws.onmessage = (event) => this._onLiveMessage(event.data);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._abandon(ws);
      this._wsClosed(event.code, opened);
    };
  }

  _wsClosed(code, opened) {
    if (!this._running) return;
    if (code === CLOSE_CLASSIC) {
      this.stop();
      this._setConnection('classic', null);
      return;
    }
    if (code === CLOSE_FORBIDDEN) {
      // No organization, or a subscription to someone who is no colleague: retrying changes nothing.
      this._error({ error: 'forbidden', detail: 'The server refused to show these colleagues.', code });
      this._setConnection('closed', 'ws');
      return;
    }
    if (code === CLOSE_NOT_AUTHENTICATED) {
      this._error({ error: 'not_authenticated', detail: 'Sign in again.', code });
    }
    if (code === CLOSE_TOO_FAR_BEHIND) {
      this._reconnectNow(); // a fresh snapshot at once
      return;
    }
    if (!opened && ++this._wsFailures >= this._opt.wsFailuresBeforeSse) this._useSse = true;
    this._scheduleReconnect();
  }

  _sendSubscription() {
    this._ws.send(JSON.stringify({ type: 'subscribe', id: `subscribe-${++this._requestId}`, user_ids: this._userIds }));
  }

  _sseUrl() {
    const ids = this._userIds ? `?user_ids=${this._userIds.map(encodeURIComponent).join(',')}` : '';
    return `${this._opt.baseUrl}${API}/peers/stream${ids}`;
  }

  /** The session's stream: EventSource sends the cookie (and can send no header). */
  _openEventSource() {
    const source = new this._opt.EventSource(this._sseUrl(), { withCredentials: Boolean(this._opt.baseUrl) });
    this._sse = source;
    source.addEventListener('open', () => this._liveOpened('sse'));
    for (const type of ['snapshot', 'presence']) {
      source.addEventListener(type, (event) => this._onLiveMessage(event.data, type));
    }
    // EventSource would retry at its own pace; one policy (backoff, a fresh getAuth) for all.
    source.addEventListener('error', () => {
      if (this._sse !== source) return;
      source.close();
      this._sse = null;
      this._scheduleReconnect();
    });
  }

  /** A token's stream: read with fetch, the only way a browser sends an Authorization header. */
  async _openStream(credential) {
    const controller = new AbortController();
    const stream = { close: () => controller.abort() };
    this._sse = stream;
    const headers = { Accept: 'text/event-stream' };
    if (credential) headers.Authorization = `${credential.scheme} ${credential.value}`;
    let retryMs = 0;
    try {
      const response = await this._opt.fetch(this._sseUrl(), { headers, signal: controller.signal, credentials: this._credentials() });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        const error = new ApiError(response.status, body, retryAfterOf(response, body, this._opt.now()));
        if (response.status === 409) {
          this.stop();
          this._setConnection('classic', null);
          return;
        }
        this._error(error);
        if ([400, 403, 404].includes(response.status)) {
          // No organization, or a subscription to someone who is no colleague: retrying changes nothing.
          this._sse = null;
          this._setConnection('closed', 'sse');
          return;
        }
        retryMs = (error.retryAfter ?? 0) * 1000;
      } else {
        this._liveOpened('sse');
        await this._readEvents(response.body, stream);
      }
    } catch (error) {
      if (this._sse !== stream) return; // closed on purpose
    }
    if (this._sse !== stream) return;
    this._sse = null;
    this._scheduleReconnect(retryMs);
  }

  async _readEvents(body, stream) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this._sse !== stream) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        this._onSseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  _onSseBlock(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue; // keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length) this._onLiveMessage(data.join('\n'), type);
  }

  _liveOpened(transport) {
    this._attempts = 0;
    if (transport === 'ws') this._wsFailures = 0;
    this._setConnection('open', transport);
  }

  // --- Live messages ------------------------------------------------------------------------

  _onLiveMessage(text, type) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (type || message.type) {
      case 'snapshot':
        return this._onSnapshot(message);
      case 'presence':
        return this._onPresence(message);
      case 'ack':
        if (this._inflight?.id === message.id) this._sent(this._inflight, message);
        return;
      case 'error':
        return this._onWsError(message);
      default:
    }
  }

  _onSnapshot(page) {
    // Pages arrive in order; the list is replaced only once the last one is in.
    if (page.page === 1 || !this._snapshot) this._snapshot = new Map();
    for (const peer of page.peers) this._snapshot.set(peer.user_id, peer);
    if (page.last) {
      this._peers = this._snapshot;
      this._snapshot = null;
      this._emit('peers', this.peers);
    }
  }

  _onPresence({ type: _type, ...change }) {
    if (this._opt.userId && change.user_id === this._opt.userId) {
      // My own change, published to the organization: it is news about me, not a colleague.
      const { user_id: _u, ...fields } = change;
      this._updateMe(fields);
      return;
    }
    const peer = { ...this._peers.get(change.user_id), ...change };
    if (this._peers.has(change.user_id) || !this._userIds || this._userIds.includes(change.user_id)) {
      this._peers.set(change.user_id, peer);
    }
    this._emit('peer', peer);
  }

  _onWsError(message) {
    const batch = this._inflight;
    if (batch && message.id === batch.id) {
      this._failed(batch, { ...message, code: message.error, retryAfter: message.retry_after ?? null });
    } else {
      this._error(message);
    }
  }
}

/** @param {PresenceClientOptions} [options] */
export function createPresenceClient(options) {
  return new PresenceClient(options);
}
