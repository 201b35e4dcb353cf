/**
 * SPARKS Presence — the people page's script (templates/pages/people.html). No framework, no build:
 * it starts the reference client with the session cookie and keeps the page current from its
 * events. The page's DOM contract is written in the template and in README "The people page".
 *
 * The helpers below (`clearAfter`, `sortPeers`, `untilText`) are exported for tests/js/.
 */
import { PresenceClient } from './client.js';

export const STATUS_LABELS = {
  available: 'Available',
  busy: 'Busy',
  away: 'Away',
  dnd: 'Do not disturb',
  offline: 'Offline',
};

// The colleague list's order: who can be reached first. Available, busy (in a call or a meeting,
// still reachable in writing), do not disturb, away, offline; then by name.
export const STATUS_ORDER = ['available', 'busy', 'dnd', 'away', 'offline'];

// What a busy status is, when the person left no message.
const ACTIVITY_TEXT = { in_call: 'In a call', in_meeting: 'In a meeting', in_calendar_event: 'In a calendar event' };

// Reasons under which the shown status is the one the person chose (the menu shows it pressed).
const MANUAL_REASONS = new Set(['manual_status', 'appear_offline', 'manual_dnd_during_call']);

/**
 * The client's `setStatus` options for a "clear after" preset, at `now` in local time:
 * `{durationSeconds}`, `{until}` or `{}` (never). "today" ends at 23:59:59 local time today;
 * "week" at 23:59:59 local time on this week's Sunday (weeks run Monday to Sunday).
 * "custom" is the `datetime-local` value, read as local time. Null: no valid time was chosen.
 * @param {string} preset  30m, 1h, 2h, today, week, never, custom
 * @param {string} [custom]  the datetime-local input's value, e.g. "2026-05-04T17:30"
 * @param {Date} [now]
 */
export function clearAfter(preset, custom = '', now = new Date()) {
  const durations = { '30m': 1800, '1h': 3600, '2h': 7200 };
  if (preset in durations) return { durationSeconds: durations[preset] };
  if (preset === 'never') return {};
  const endOfDay = (days) => new Date(now.getFullYear(), now.getMonth(), now.getDate() + days, 23, 59, 59);
  if (preset === 'today') return { until: endOfDay(0) };
  if (preset === 'week') return { until: endOfDay((7 - now.getDay()) % 7) }; // getDay(): 0 is Sunday
  if (preset === 'custom') {
    const until = custom ? new Date(custom) : null; // "YYYY-MM-DDTHH:MM" without offset: local time
    return until && !Number.isNaN(until.getTime()) && until > now ? { until } : null;
  }
  return null;
}

/** Colleagues in the list's order (STATUS_ORDER, then name). */
export function sortPeers(peers) {
  const rank = (status) => {
    const index = STATUS_ORDER.indexOf(status);
    return index < 0 ? STATUS_ORDER.length : index;
  };
  const name = (peer) => peer.display_name || '';
  return [...peers].sort((a, b) => rank(a.status) - rank(b.status) || name(a).localeCompare(name(b)));
}

/**
 * "until 14:30" when the time is today (in the browser's time zone), else "until Tue 5 May, 14:30";
 * '' without a time.
 * @param {string|null|undefined} iso
 * @param {{now?: Date, locale?: string, timeZone?: string}} [options]
 */
export function untilText(iso, { now = new Date(), locale, timeZone } = {}) {
  if (!iso) return '';
  const until = new Date(iso);
  if (Number.isNaN(until.getTime())) return '';
  const day = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' });
  const sameDay = day.format(until) === day.format(now);
  const options = sameDay
    ? { timeZone, hour: '2-digit', minute: '2-digit' }
    : { timeZone, weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' };
  return `until ${new Intl.DateTimeFormat(locale, options).format(until)}`;
}

// --- The page ------------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

/** A status as text and a shape, never by colour alone; its message, or else its activity. */
function fillStatus(container, { status, status_msg: message, status_until: until, activity }) {
  container.dataset.status = status;
  container.querySelector('.shape').className = `shape ${status}`;
  container.querySelector('.label').textContent = STATUS_LABELS[status] || status;
  const messageNode = container.querySelector('.message');
  messageNode.textContent = message ? `“${message}”` : ACTIVITY_TEXT[activity] || '';
  messageNode.classList.toggle('muted', !message);
  const untilNode = container.querySelector('.until');
  untilNode.textContent = '';
  const text = untilText(until);
  if (text) {
    const time = el('time', '', text);
    time.dateTime = until;
    untilNode.append(time);
  }
}

function personItem(userId) {
  const item = el('li', 'person');
  item.dataset.userId = userId;
  const status = el('span', 'person-status');
  status.append(el('span', 'shape'), el('span', 'label'));
  item.append(el('span', 'name'), status, el('span', 'message'), el('span', 'until'));
  return item;
}

function main(root) {
  const list = document.getElementById('colleagues');
  const empty = document.getElementById('colleagues-empty');
  const mine = document.getElementById('my-status');
  const error = document.getElementById('status-error');
  const preset = document.getElementById('clear-after');
  const custom = document.getElementById('clear-after-custom');
  const message = document.getElementById('status-message');
  const connection = document.getElementById('connection');
  const choices = [...document.querySelectorAll('[data-status-choice]')];
  const items = new Map(); // user id → its list element, kept so that focus and order survive updates

  const client = new PresenceClient({ getAuth: () => null, label: 'People page', userId: root.dataset.userId });
  window.sparksPresence = client;

  function renderMe(me) {
    fillStatus(mine, me);
    const chosen = MANUAL_REASONS.has(me.reason) ? me.status : null;
    for (const button of choices) button.setAttribute('aria-pressed', String(button.dataset.statusChoice === chosen));
  }

  function renderPeers() {
    // The client keeps my own changes out of its peers (they update `me`, as `userId` is given).
    const peers = sortPeers(client.peers);
    const seen = new Set();
    for (const peer of peers) {
      seen.add(peer.user_id);
      let item = items.get(peer.user_id);
      if (!item) items.set(peer.user_id, (item = personItem(peer.user_id)));
      item.querySelector('.name').textContent = peer.display_name || 'Colleague';
      fillStatus(item, peer); // sets data-status
      list.append(item); // appending an element already in the list moves it: the list is now in order
    }
    for (const [userId, item] of items) {
      if (!seen.has(userId)) {
        item.remove();
        items.delete(userId);
      }
    }
    empty.hidden = peers.length > 0;
    if (!peers.length) empty.textContent = 'No colleague to show yet.';
  }

  function renderConnection({ state, transport }) {
    const texts = { open: 'Live', connecting: 'Connecting…', closed: 'Reconnecting…', classic: 'Classic mode' };
    connection.dataset.state = state;
    connection.querySelector('.text').textContent = texts[state] || state;
    connection.title = transport ? `Connection: ${transport === 'ws' ? 'WebSocket' : transport.toUpperCase()}` : '';
  }

  async function act(change) {
    error.textContent = '';
    try {
      await change();
    } catch (failure) {
      const wait = failure.retryAfter ? ` Try again in ${Math.ceil(failure.retryAfter)} s.` : '';
      error.textContent = `${failure.message || 'Your status could not be changed.'}${wait}`;
    }
  }

  for (const button of choices) {
    button.addEventListener('click', () => {
      const options = clearAfter(preset.value, custom.value);
      if (!options) {
        error.textContent = 'Choose a date and time in the future to clear the status at.';
        custom.focus();
        return;
      }
      act(() => client.setStatus(button.dataset.statusChoice, { message: message.value.trim(), ...options }));
    });
  }
  document.getElementById('clear-status').addEventListener('click', () => act(() => client.clearStatus()));
  preset.addEventListener('change', () => {
    document.getElementById('clear-after-custom-field').hidden = preset.value !== 'custom';
  });

  client.addEventListener('me', (event) => renderMe(event.detail));
  client.addEventListener('peers', renderPeers);
  client.addEventListener('peer', renderPeers);
  client.addEventListener('connection', (event) => renderConnection(event.detail));

  // The server-rendered "until" is in the server's time zone: say it in the browser's.
  const rendered = mine.querySelector('.until time');
  if (rendered) rendered.textContent = untilText(rendered.dateTime);
  client.start();
}

const root = globalThis.document?.getElementById('people');
if (root) main(root);
