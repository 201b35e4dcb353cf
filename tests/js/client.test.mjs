// The reference presence client (presence/static/presence/client.js) against a fake server and a
// fake clock: `node --test tests/js/`. No npm package, no browser.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { backoffDelay, PresenceClient } from '../../presence/static/presence/client.js';

const API = '/api/v1';

/** Promise chains (fetch, Response bodies) run between the fake clock's steps. */
async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

class FakeClock {
  constructor() {
    this.t = 1_700_000_000_000;
    this.timers = new Map();
    this.nextId = 1;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { id, at: this.t + Math.max(0, ms || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
  }

  /** Move time forward, running each timer due on the way at its own time. */
  async tick(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      const due = [...this.timers.values()].filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers.delete(due.id);
      this.t = due.at;
      due.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

function json(status, body, headers = {}) {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

const PRESENCE = {
  status: 'available',
  activity: 'active',
  status_msg: null,
  last_active: '2026-01-01T00:00:00Z',
  last_active_ago: 0,
  currently_active: true,
  reason: 'active_device',
};

/** Answers as the real server does, and records everything sent to it. */
class FakeServer {
  constructor(config = {}) {
    this.config = {
      aggregator: true,
      server_dispatch: false,
      sse: false,
      device_timeout_seconds: 120,
      heartbeat_interval_seconds: 30,
      idle_timeout_seconds: 300,
      ...config,
    };
    this.requests = [];
    this.overrides = [];
    this.sockets = [];
    this.sources = [];
    this.streams = [];
    this.wsReplies = [];
    this.fetch = (url, init) => this.handle(url, init);
    this.WebSocket = makeWebSocket(this);
    this.EventSource = makeEventSource(this);
  }

  /** The next request matching answers `reply` (`{status, body, headers}`, or `{throws: true}`). */
  once(method, pathPattern, reply) {
    this.overrides.push({ method, pathPattern, reply });
  }

  async handle(url, init = {}) {
    const u = new URL(url, 'https://presence.test');
    const method = init.method || 'GET';
    const request = { method, path: u.pathname, query: u.search, headers: init.headers || {}, init };
    request.body = init.body ? JSON.parse(init.body) : undefined;
    this.requests.push(request);
    const index = this.overrides.findIndex((o) => o.method === method && o.pathPattern.test(u.pathname));
    if (index >= 0) {
      const { reply } = this.overrides.splice(index, 1)[0];
      if (reply.throws) throw new TypeError('Failed to fetch');
      return json(reply.status, reply.body ?? {}, reply.headers);
    }
    return this.route(request);
  }

  route({ method, path, body, init }) {
    if (method === 'GET' && path === `${API}/config`) return json(200, this.config);
    if (method === 'POST' && path === `${API}/devices`) {
      return json(201, { device_id: `dev-${body.installation_id}`, label: body.label });
    }
    if (method === 'DELETE' && path.startsWith(`${API}/devices/`)) return json(204);
    if (method === 'POST' && /\/signals$/.test(path)) {
      return json(202, { ...PRESENCE, signals_applied: body.signals.length, signals_ignored: 0 });
    }
    if (method === 'PUT' && path === `${API}/me/status`) {
      return json(200, { ...PRESENCE, status: body.status, status_msg: body.message || null, reason: 'manual' });
    }
    if (method === 'DELETE' && path === `${API}/me/status`) return json(200, PRESENCE);
    if (method === 'GET' && path === `${API}/peers/stream`) return this.openStream(init);
    return json(404, { error: 'not_found', detail: 'Not found.' });
  }

  openStream(init) {
    let controller;
    const body = new ReadableStream({ start: (c) => (controller = c) });
    const encoder = new TextEncoder();
    const stream = {
      send: (event, data) => controller.enqueue(encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)),
      comment: () => controller.enqueue(encoder.encode(': keep-alive\n\n')),
      end: () => controller.close(),
    };
    init.signal?.addEventListener('abort', () => {
      stream.aborted = true;
      controller.error(new Error('aborted'));
    });
    this.streams.push(stream);
    return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  }

  get lastSocket() {
    return this.sockets.at(-1);
  }

  restSignals() {
    return this.requests.filter((r) => r.method === 'POST' && /\/signals$/.test(r.path));
  }
}

function makeWebSocket(server) {
  return class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      server.sockets.push(this);
    }

    send(text) {
      const message = JSON.parse(text);
      this.sent.push(message);
      if (message.type !== 'signals') return;
      const reply = server.wsReplies.length
        ? server.wsReplies.shift()(message)
        : { type: 'ack', id: message.id, ...PRESENCE, signals_applied: message.signals.length, signals_ignored: 0 };
      if (reply) queueMicrotask(() => this.receive(reply));
    }

    close(code = 1000) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.closedWith = code;
      queueMicrotask(() => this.onclose?.({ code }));
    }

    // What the server does:
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code });
    }

    signals() {
      return this.sent.filter((m) => m.type === 'signals').flatMap((m) => m.signals);
    }
  };
}

function makeEventSource(server) {
  return class FakeEventSource extends EventTarget {
    constructor(url, init) {
      super();
      this.url = url;
      this.init = init;
      this.readyState = 0;
      server.sources.push(this);
    }

    close() {
      this.readyState = 2;
      this.closed = true;
    }

    open() {
      this.readyState = 1;
      this.dispatchEvent(new Event('open'));
    }

    emit(type, data) {
      this.dispatchEvent(new MessageEvent(type, { data: JSON.stringify(data) }));
    }

    fail() {
      this.dispatchEvent(new Event('error'));
    }
  };
}

function memoryStorage() {
  const items = new Map();
  return {
    items,
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
  };
}

class FakeDocument extends EventTarget {
  visibilityState = 'visible';
  cookie = 'other=1; csrftoken=csrf-secret';

  setVisibility(state) {
    this.visibilityState = state;
    this.dispatchEvent(new Event('visibilitychange'));
  }

  input(type = 'pointermove') {
    this.dispatchEvent(new Event(type));
  }
}

let clock;
let server;
let storage;
let document;
let window;
let uuids;

beforeEach(() => {
  clock = new FakeClock();
  server = new FakeServer();
  storage = memoryStorage();
  document = new FakeDocument();
  window = new EventTarget();
  uuids = 0;
});

function makeClient(options = {}) {
  const client = new PresenceClient({
    fetch: server.fetch,
    WebSocket: server.WebSocket,
    EventSource: server.EventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    randomUUID: () => `install-${++uuids}`,
    storage,
    document,
    window,
    navigator: { onLine: true },
    location: { protocol: 'https:', host: 'presence.test' },
    ...options,
  });
  client.events = [];
  for (const type of ['me', 'peer', 'peers', 'connection', 'error']) {
    client.addEventListener(type, (event) => client.events.push({ type, detail: event.detail }));
  }
  client.eventsOf = (type) => client.events.filter((e) => e.type === type).map((e) => e.detail);
  return client;
}

/** Signals sent over REST, flattened, each with the time it was sent. */
function restSignals() {
  return server.restSignals().flatMap((r) => r.body.signals);
}

function allSeqs() {
  const ws = server.sockets.flatMap((s) => s.signals());
  return [...restSignals(), ...ws].map((s) => s.seq);
}

async function started(options) {
  const client = makeClient(options);
  await client.start();
  await settle();
  return client;
}

describe('registration', () => {
  test('registers with an installation id kept in storage, and reuses it after a reload', async () => {
    const first = await started({ label: 'Laptop' });
    const [register] = server.requests.filter((r) => r.path === `${API}/devices`);
    assert.deepEqual(register.body, { installation_id: 'install-1', label: 'Laptop' });
    assert.equal(first.deviceId, 'dev-install-1');
    first.stop();

    const second = await started();
    const registrations = server.requests.filter((r) => r.path === `${API}/devices`);
    assert.equal(registrations.length, 2);
    assert.equal(registrations[1].body.installation_id, 'install-1');
    assert.equal(uuids, 1, 'the installation id is generated once');
    second.stop();
  });

  test('seq keeps increasing across a reload (a new client on the same storage)', async () => {
    const first = await started();
    first.setCall(true);
    await clock.tick(30_000);
    first.stop();
    const second = await started();
    second.setCall(false);
    await clock.tick(30_000);
    second.stop();
    const seqs = allSeqs();
    assert.ok(seqs.length >= 5, `signals were sent: ${seqs}`);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `strictly increasing: ${seqs}`);
  });

  test('the first answer reports my presence, and the current visibility is sent after signing in', async () => {
    document.visibilityState = 'hidden';
    const client = await started();
    assert.deepEqual(
      restSignals().map((s) => [s.type, s.value]),
      [['visibility', 'hidden']],
    );
    assert.equal(client.eventsOf('me')[0].status, 'available');
    assert.equal(client.me.reason, 'active_device');
    client.stop();
  });

  test('signOut stops and deletes the device', async () => {
    const client = await started();
    server.lastSocket.open();
    await client.signOut();
    const deleted = server.requests.find((r) => r.method === 'DELETE');
    assert.equal(deleted.path, `${API}/devices/dev-install-1`);
    assert.equal(server.lastSocket.readyState, 3);
    assert.equal(clock.timers.size, 0, 'no timer left behind');
    assert.equal(client.connection.state, 'closed');
  });

  test('a device signed out meanwhile (404) is registered again and its state sent again', async () => {
    const client = await started();
    client.setCall(true);
    await settle();
    server.once('POST', /\/signals$/, { status: 404, body: { error: 'not_found', detail: 'No such device.' } });
    client.setMeeting(true);
    await clock.tick(0);
    const registrations = server.requests.filter((r) => r.path === `${API}/devices`);
    assert.equal(registrations.length, 2);
    const last = server.restSignals().at(-1).body.signals.map((s) => [s.type, s.value]);
    assert.deepEqual(last, [
      ['visibility', 'visible'],
      ['call', 'start'],
      ['meeting', 'start'],
    ]);
    client.stop();
  });
});

describe('classic mode', () => {
  test('does nothing but say so', async () => {
    server.config.aggregator = false;
    const client = await started();
    assert.deepEqual(
      server.requests.map((r) => r.path),
      [`${API}/config`],
    );
    assert.equal(server.sockets.length, 0);
    assert.equal(client.connection.state, 'classic');
    assert.deepEqual(client.eventsOf('connection').at(-1), { state: 'classic', transport: null });
    client.setCall(true);
    document.input();
    await clock.tick(600_000);
    assert.equal(server.requests.length, 1);
    assert.equal(clock.timers.size, 0);
  });

  test('a websocket closed with 4409 stops the client in classic mode', async () => {
    const client = await started();
    server.lastSocket.drop(4409);
    await clock.tick(120_000);
    assert.equal(client.connection.state, 'classic');
    assert.equal(server.sockets.length, 1);
  });
});

describe('heartbeats', () => {
  test('every interval from config: over REST while no websocket is open, then over the websocket', async () => {
    server.config.heartbeat_interval_seconds = 20;
    const client = await started();
    const before = server.restSignals().length;
    await clock.tick(19_999);
    assert.equal(server.restSignals().length, before, 'not before the interval');
    await clock.tick(1);
    assert.deepEqual(server.restSignals().at(-1).body.signals.map((s) => s.type), ['heartbeat']);

    server.lastSocket.open();
    const restCount = server.restSignals().length;
    await clock.tick(20_000);
    assert.equal(server.restSignals().length, restCount, 'no REST while the websocket is open');
    const message = server.lastSocket.sent.at(-1);
    assert.equal(message.type, 'signals');
    assert.equal(message.device_id, 'dev-install-1');
    assert.deepEqual(message.signals.map((s) => s.type), ['heartbeat']);
    assert.equal(client.eventsOf('me').length, 3, 'each answer reports my presence');

    server.lastSocket.drop(1006);
    await clock.tick(20_000);
    assert.equal(server.restSignals().length, restCount + 1, 'back to REST while reconnecting');
    client.stop();
  });

  test('signals left unanswered on a closed socket are sent again', async () => {
    const client = await started();
    server.lastSocket.open();
    server.wsReplies.push(() => null); // no ack
    client.setCall(true);
    await settle();
    server.lastSocket.drop(1006);
    await settle();
    assert.deepEqual(server.restSignals().at(-1).body.signals.map((s) => [s.type, s.value]), [['call', 'start']]);
    client.stop();
  });

  test('a socket that acknowledges nothing is replaced', async () => {
    const client = await started({ ackTimeoutMs: 10_000 });
    const socket = server.lastSocket;
    socket.open();
    server.wsReplies.push(() => null);
    client.setCall(true);
    await clock.tick(10_000);
    assert.equal(socket.closedWith, 4000);
    assert.deepEqual(server.restSignals().at(-1).body.signals.map((s) => s.value), ['start']);
    client.stop();
  });
});

describe('reconnecting', () => {
  test('backoff grows with jitter, is capped, and starts over after a connection opened', async () => {
    const client = await started({ wsFailuresBeforeSse: Infinity, backoffBaseMs: 1000, backoffMaxMs: 16_000 });
    const delays = [];
    for (let i = 0; i < 7; i++) {
      server.lastSocket.drop(1006);
      await settle();
      delays.push(client.connection.retryInMs);
      await clock.tick(client.connection.retryInMs);
    }
    // random() = 0.5: three quarters of 1, 2, 4, 8, 16 (the cap), 16, 16 seconds.
    assert.deepEqual(delays, [750, 1500, 3000, 6000, 12_000, 12_000, 12_000]);
    assert.equal(server.sockets.length, 8);

    server.lastSocket.open();
    server.lastSocket.drop(1006);
    await settle();
    assert.equal(client.connection.retryInMs, 750, 'reset after a successful connection');
    client.stop();
  });

  test('jitter spreads the delay between half and all of the ceiling', () => {
    assert.equal(backoffDelay(0, { random: () => 0 }), 500);
    assert.equal(backoffDelay(0, { random: () => 0.999999 }), 1000);
    assert.equal(backoffDelay(3, { random: () => 0 }), 4000);
    assert.equal(backoffDelay(50, { random: () => 0.999999, maxMs: 60_000 }), 60_000);
  });

  test('re-subscribes after reconnecting, and keeps peers from the snapshot and changes', async () => {
    const client = await started();
    client.subscribe(['u-1', 'u-2']);
    server.lastSocket.open();
    assert.deepEqual(server.lastSocket.sent.at(-1).user_ids, ['u-1', 'u-2']);
    server.lastSocket.receive({ type: 'snapshot', peers: [{ user_id: 'u-1', display_name: 'Ann', status: 'busy' }], page: 1, last: false });
    server.lastSocket.receive({ type: 'snapshot', peers: [{ user_id: 'u-2', display_name: 'Bob', status: 'away' }], page: 2, last: true });
    assert.equal(client.eventsOf('peers').length, 1, 'once the last page is in');
    assert.deepEqual(client.peers.map((p) => p.user_id), ['u-1', 'u-2']);
    server.lastSocket.receive({ type: 'presence', user_id: 'u-1', status: 'available', activity: 'active', status_msg: null, currently_active: true, last_active_ago: 0 });
    assert.deepEqual(client.eventsOf('peer').at(-1), {
      user_id: 'u-1',
      display_name: 'Ann',
      status: 'available',
      activity: 'active',
      status_msg: null,
      currently_active: true,
      last_active_ago: 0,
    });

    server.lastSocket.drop(1006);
    await clock.tick(client.connection.retryInMs);
    assert.equal(server.sockets.length, 2);
    server.lastSocket.open();
    const subscriptions = server.lastSocket.sent.filter((m) => m.type === 'subscribe');
    assert.deepEqual(subscriptions.map((m) => m.user_ids), [['u-1', 'u-2']]);
    client.stop();
  });

  test('my own change on the live stream is news about me, not a colleague', async () => {
    const client = await started({ userId: 'me-1' });
    server.lastSocket.open();
    server.lastSocket.receive({ type: 'snapshot', peers: [{ user_id: 'u-1', display_name: 'Ann', status: 'busy' }], page: 1, last: true });
    const peerEvents = client.eventsOf('peer').length;

    server.lastSocket.receive({ type: 'presence', user_id: 'me-1', status: 'dnd', activity: 'do_not_disturb', status_msg: 'Focus', currently_active: false, last_active_ago: 0, status_until: '2026-11-25T10:00:00Z' });

    assert.equal(client.eventsOf('peer').length, peerEvents);
    assert.deepEqual(client.peers.map((p) => p.user_id), ['u-1']);
    assert.equal(client.me.status, 'dnd');
    assert.equal(client.me.status_until, '2026-11-25T10:00:00Z');
    client.stop();
  });

  test('a socket closed for reading too slowly (4408) reconnects at once', async () => {
    const client = await started();
    server.lastSocket.open();
    server.lastSocket.drop(4408);
    await clock.tick(0);
    assert.equal(server.sockets.length, 2);
    client.stop();
  });

  test('going online reconnects without waiting for the backoff', async () => {
    const client = await started({ wsFailuresBeforeSse: Infinity });
    for (let i = 0; i < 4; i++) {
      server.lastSocket.drop(1006);
      await clock.tick(client.connection.retryInMs);
    }
    server.lastSocket.drop(1006);
    await settle();
    window.dispatchEvent(new Event('offline'));
    window.dispatchEvent(new Event('online'));
    await clock.tick(0);
    assert.equal(server.sockets.length, 6);
    // Offline or not, the server may still be reachable (a LAN): both are reported as they come.
    assert.deepEqual(restSignals().filter((s) => s.type === 'network').map((s) => s.value), ['offline', 'online']);
    client.stop();
  });
});

describe('rate limits and unavailability', () => {
  test('429 with Retry-After holds off sending until then', async () => {
    const client = await started();
    server.once('POST', /\/signals$/, {
      status: 429,
      headers: { 'Retry-After': '20' },
      body: { error: 'rate_limited', detail: 'Too many signals from this device; retry in 20 s.', retry_after: 20 },
    });
    client.setCall(true);
    await clock.tick(0);
    const count = server.restSignals().length;
    assert.equal(client.eventsOf('error').at(-1).retryAfter, 20);
    client.setMeeting(true);
    document.setVisibility('hidden');
    await clock.tick(19_999);
    assert.equal(server.restSignals().length, count, 'nothing sent while held off');
    await clock.tick(1);
    assert.equal(server.restSignals().length, count + 1, 'one request once the time is up');
    assert.deepEqual(server.restSignals().at(-1).body.signals.map((s) => [s.type, s.value]), [
      ['call', 'start'],
      ['meeting', 'start'],
      ['visibility', 'hidden'],
    ]);
    client.stop();
  });

  test('503 with Retry-After too', async () => {
    const client = await started();
    server.once('POST', /\/signals$/, {
      status: 503,
      headers: { 'Retry-After': '1' },
      body: { error: 'redis_unavailable', detail: 'The redis cannot be reached; retry in a moment.' },
    });
    client.setCall(true);
    await clock.tick(999);
    const count = server.restSignals().length;
    await clock.tick(1);
    assert.equal(server.restSignals().length, count + 1);
    assert.equal(server.restSignals().at(-1).body.signals[0].type, 'call');
    client.stop();
  });

  test('a 429 on registration is waited out before trying again', async () => {
    server.once('POST', /\/devices$/, { status: 429, headers: { 'Retry-After': '7' }, body: { error: 'rate_limited', retry_after: 7 } });
    const client = makeClient();
    const starting = client.start();
    await clock.tick(6_999);
    assert.equal(server.requests.filter((r) => r.path === `${API}/devices`).length, 1);
    await clock.tick(1);
    await starting;
    assert.equal(client.deviceId, 'dev-install-1');
    client.stop();
  });

  test('a network failure is retried with backoff, not at once', async () => {
    const client = await started();
    server.once('POST', /\/signals$/, { throws: true });
    client.setCall(true);
    await clock.tick(0);
    const count = server.restSignals().length;
    await clock.tick(749);
    assert.equal(server.restSignals().length, count);
    await clock.tick(1);
    assert.equal(server.restSignals().length, count + 1);
    client.stop();
  });

  test("the websocket's rate_limited error holds off sending for retry_after", async () => {
    const client = await started();
    const socket = server.lastSocket;
    socket.open();
    server.wsReplies.push((m) => ({ type: 'error', id: m.id, error: 'rate_limited', detail: 'Too many.', retry_after: 10 }));
    client.setCall(true);
    await settle();
    const sent = socket.signals().length;
    await clock.tick(9_999);
    assert.equal(socket.signals().length, sent);
    assert.equal(server.restSignals().length, 1, 'nor over REST');
    await clock.tick(1);
    assert.deepEqual(socket.signals().slice(sent).map((s) => [s.type, s.value]), [['call', 'start']]);
    client.stop();
  });
});

describe('server-sent events', () => {
  test('used when the websocket fails to open twice', async () => {
    const client = await started();
    server.lastSocket.drop(1006);
    await clock.tick(client.connection.retryInMs);
    server.lastSocket.drop(1006);
    await clock.tick(client.connection.retryInMs);
    assert.equal(server.sockets.length, 2);
    assert.equal(server.sources.length, 1);
    const source = server.sources[0];
    assert.equal(source.url, `${API}/peers/stream`);
    source.open();
    assert.deepEqual(client.connection, { state: 'open', transport: 'sse' });
    source.emit('snapshot', { type: 'snapshot', peers: [{ user_id: 'u-1', status: 'busy' }], page: 1, last: true });
    source.emit('presence', { type: 'presence', user_id: 'u-1', status: 'dnd' });
    assert.equal(client.eventsOf('peers').length, 1);
    assert.equal(client.eventsOf('peer').at(-1).status, 'dnd');

    const count = server.restSignals().length;
    await clock.tick(30_000);
    assert.equal(server.restSignals().length, count + 1, 'heartbeats over REST');

    source.fail();
    assert.ok(source.closed, 'its own retrying replaced by the backoff');
    await clock.tick(client.connection.retryInMs);
    assert.equal(server.sources.length, 2);
    client.stop();
  });

  test('used from the start when config prefers it, with the subscription in the URL', async () => {
    server.config.sse = true;
    const client = makeClient();
    client.subscribe(['u-1', 'u-2']);
    await client.start();
    await settle();
    assert.equal(server.sockets.length, 0);
    assert.equal(server.sources[0].url, `${API}/peers/stream?user_ids=u-1,u-2`);
    client.stop();
    assert.ok(server.sources[0].closed);
  });

  test('with a token, read by fetch with the Authorization header', async () => {
    server.config.sse = true;
    const client = await started({ getAuth: async () => ({ token: 'abc', scheme: 'Token' }) });
    assert.equal(server.sources.length, 0);
    const request = server.requests.find((r) => r.path === `${API}/peers/stream`);
    assert.equal(request.headers.Authorization, 'Token abc');
    const stream = server.streams[0];
    stream.send('snapshot', { type: 'snapshot', peers: [{ user_id: 'u-1', status: 'busy' }], page: 1, last: true });
    stream.comment();
    stream.send('presence', { type: 'presence', user_id: 'u-1', status: 'away' });
    await settle();
    assert.deepEqual(client.connection, { state: 'open', transport: 'sse' });
    assert.deepEqual(client.peers, [{ user_id: 'u-1', status: 'away' }]);

    stream.end();
    await settle();
    assert.equal(client.connection.state, 'closed');
    await clock.tick(client.connection.retryInMs);
    assert.equal(server.streams.length, 2);
    client.stop();
    await settle();
    assert.ok(server.streams[1].aborted);
  });
});

describe('reporting', () => {
  test('activity is throttled, idle follows the quiet time, and input makes the device active again', async () => {
    const client = await started({ activityThrottleSeconds: 10, idleAfterSeconds: 60 });
    const activity = () => restSignals().filter((s) => s.type === 'activity').map((s) => s.value);
    await clock.tick(10_000);
    for (let i = 0; i < 50; i++) {
      document.input(i % 2 ? 'keydown' : 'pointermove');
      await clock.tick(100);
    }
    assert.deepEqual(activity(), ['active'], 'one report for many events');
    await clock.tick(15_000);
    assert.deepEqual(activity(), ['active', 'active'], 'the input held back goes with the heartbeat');
    // The last input was at 14.9 s: idle a minute later, not before.
    await clock.tick(74_899 - 30_000);
    assert.deepEqual(activity(), ['active', 'active']);
    await clock.tick(1);
    assert.deepEqual(activity(), ['active', 'active', 'idle']);
    document.input('touchstart');
    await settle();
    assert.deepEqual(activity(), ['active', 'active', 'idle', 'active'], 'back at once, throttle or not');
    client.stop();
  });

  test('input held back by the throttle goes with the next heartbeat', async () => {
    const client = await started({ activityThrottleSeconds: 60 });
    await clock.tick(1_000);
    document.input();
    await clock.tick(29_000);
    assert.deepEqual(server.restSignals().at(-1).body.signals.map((s) => s.type), ['heartbeat', 'activity']);
    client.stop();
  });

  test('visibility hidden and visible', async () => {
    const client = await started();
    document.setVisibility('hidden');
    await settle();
    document.setVisibility('visible');
    await settle();
    const values = restSignals().filter((s) => s.type === 'visibility').map((s) => s.value);
    assert.deepEqual(values, ['visible', 'hidden', 'visible']);
    assert.equal(server.restSignals().at(-1).init.keepalive, true, 'survives the page going away');
    client.stop();
  });

  test('setCall and setMeeting send start and end', async () => {
    const client = await started();
    server.lastSocket.open();
    client.setCall(true);
    await settle();
    client.setCall(false);
    client.setMeeting(true);
    await settle();
    client.setMeeting(false);
    await settle();
    const sent = server.lastSocket.signals().map((s) => [s.type, s.value]);
    assert.deepEqual(sent, [
      ['call', 'start'],
      ['call', 'end'],
      ['meeting', 'start'],
      ['meeting', 'end'],
    ]);
    client.stop();
  });

  test('the latest of each signal wins while one batch is on its way', async () => {
    const client = await started();
    server.lastSocket.open();
    server.wsReplies.push(() => null);
    client.setCall(true);
    client.setCall(false);
    client.setCall(true);
    await settle();
    server.lastSocket.receive({ type: 'ack', id: server.lastSocket.sent.at(-1).id, ...PRESENCE });
    await settle();
    assert.deepEqual(server.lastSocket.signals().map((s) => s.value), ['start', 'start']);
    client.stop();
  });
});

describe('status and credentials', () => {
  test('setStatus and clearStatus, reported as my presence', async () => {
    const client = await started();
    const presence = await client.setStatus('busy', { durationSeconds: 3600, message: 'Focus' });
    assert.equal(presence.status, 'busy');
    const put = server.requests.find((r) => r.method === 'PUT');
    assert.deepEqual(put.body, { status: 'busy', message: 'Focus', duration_seconds: 3600 });
    const until = new Date('2030-01-01T10:00:00Z');
    await client.setStatus('dnd', { until });
    assert.equal(server.requests.filter((r) => r.method === 'PUT').at(-1).body.until, '2030-01-01T10:00:00.000Z');
    await client.clearStatus();
    assert.deepEqual(client.eventsOf('me').map((p) => p.status).slice(-3), ['busy', 'dnd', 'available']);
    client.stop();
  });

  test('a refused status rejects with the API error and its retry time', async () => {
    const client = await started();
    server.once('PUT', /\/me\/status$/, { status: 429, headers: { 'Retry-After': '12' }, body: { error: 'rate_limited', retry_after: 12 } });
    await assert.rejects(client.setStatus('busy'), (error) => error.status === 429 && error.retryAfter === 12);
    client.stop();
  });

  test('session: the CSRF token on unsafe requests, no Authorization, the websocket on the cookie', async () => {
    const client = await started();
    const register = server.requests.find((r) => r.path === `${API}/devices`);
    assert.equal(register.headers['X-CSRFToken'], 'csrf-secret');
    assert.equal(register.headers.Authorization, undefined);
    assert.equal(server.requests[0].headers['X-CSRFToken'], undefined, 'not on a GET');
    assert.equal(server.lastSocket.url, 'wss://presence.test/ws/presence/');
    assert.deepEqual(server.lastSocket.protocols, ['sparks.presence.v1']);
    client.stop();
  });

  test('token: asked again before each connection, as a header on REST and a subprotocol on the websocket', async () => {
    let n = 0;
    const client = await started({ getAuth: () => ({ token: `t${++n}` }) });
    const register = server.requests.find((r) => r.path === `${API}/devices`);
    assert.match(register.headers.Authorization, /^Bearer t\d$/);
    assert.equal(register.headers['X-CSRFToken'], undefined);
    const first = server.lastSocket.protocols;
    server.lastSocket.drop(1006);
    await clock.tick(client.connection.retryInMs);
    const second = server.lastSocket.protocols;
    assert.equal(first[0], 'sparks.presence.v1');
    assert.match(first[1], /^bearer\.t\d$/);
    assert.notEqual(first[1], second[1], 'a refreshed token for the new connection');
    client.stop();

    const drf = await started({ getAuth: () => ({ authorization: 'Token 9944b0' }), baseUrl: 'http://other.test:8000' });
    assert.equal(server.requests.at(-1).headers.Authorization, 'Token 9944b0');
    assert.equal(server.lastSocket.url, 'ws://other.test:8000/ws/presence/');
    assert.deepEqual(server.lastSocket.protocols, ['sparks.presence.v1', 'token.9944b0']);
    drf.stop();
  });

  test('a websocket refused for credentials (4401) says so and retries with backoff', async () => {
    const client = await started();
    server.lastSocket.open();
    server.lastSocket.drop(4401);
    await settle();
    assert.equal(client.eventsOf('error').at(-1).error, 'not_authenticated');
    assert.equal(client.connection.state, 'closed');
    assert.ok(client.connection.retryInMs > 0);
    client.stop();
  });
});
