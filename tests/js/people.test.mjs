// The people page's helpers (presence/static/presence/people.js): `node --test tests/js/`.
// Local times are built with the Date constructor, so the tests hold in any time zone.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { clearAfter, sortPeers, untilText } from '../../presence/static/presence/people.js';

describe('clearAfter', () => {
  const wednesday = new Date(2026, 4, 6, 15, 20); // Wednesday 6 May 2026, 15:20 local

  test('the fixed presets are durations', () => {
    assert.deepEqual(clearAfter('30m', '', wednesday), { durationSeconds: 1800 });
    assert.deepEqual(clearAfter('1h', '', wednesday), { durationSeconds: 3600 });
    assert.deepEqual(clearAfter('2h', '', wednesday), { durationSeconds: 7200 });
  });

  test('never sets no end', () => {
    assert.deepEqual(clearAfter('never', '', wednesday), {});
  });

  test('today ends at 23:59:59 local time', () => {
    assert.deepEqual(clearAfter('today', '', wednesday), { until: new Date(2026, 4, 6, 23, 59, 59) });
  });

  test("this week ends on Sunday at 23:59:59 local time, also on a Sunday and on a Monday", () => {
    const sunday = new Date(2026, 4, 10, 23, 59, 59);
    assert.deepEqual(clearAfter('week', '', wednesday), { until: sunday });
    assert.deepEqual(clearAfter('week', '', new Date(2026, 4, 10, 9, 0)), { until: sunday });
    assert.deepEqual(clearAfter('week', '', new Date(2026, 4, 11, 9, 0)), { until: new Date(2026, 4, 17, 23, 59, 59) });
  });

  test('a chosen time is read as local time and must be in the future', () => {
    assert.deepEqual(clearAfter('custom', '2026-05-06T17:30', wednesday), { until: new Date(2026, 4, 6, 17, 30) });
    assert.equal(clearAfter('custom', '2026-05-06T09:00', wednesday), null);
    assert.equal(clearAfter('custom', '', wednesday), null);
  });
});

test('colleagues are sorted available, busy, dnd, away, offline, then by name', () => {
  const peers = [
    { user_id: '1', display_name: 'Zoe', status: 'offline' },
    { user_id: '2', display_name: 'Yann', status: 'away' },
    { user_id: '3', display_name: 'Bea', status: 'available' },
    { user_id: '4', display_name: 'Xia', status: 'dnd' },
    { user_id: '5', display_name: 'Abe', status: 'available' },
    { user_id: '6', display_name: 'Cid', status: 'busy' },
  ];
  assert.deepEqual(
    sortPeers(peers).map((p) => p.display_name),
    ['Abe', 'Bea', 'Cid', 'Xia', 'Yann', 'Zoe'],
  );
});

describe('untilText', () => {
  const now = new Date('2026-05-06T10:00:00Z');

  test('a time today is said as the time of day, in the given time zone', () => {
    assert.equal(untilText('2026-05-06T14:30:00Z', { now, locale: 'en-GB', timeZone: 'UTC' }), 'until 14:30');
    assert.equal(untilText('2026-05-06T14:30:00Z', { now, locale: 'en-GB', timeZone: 'Europe/Berlin' }), 'until 16:30');
  });

  test('another day is said with its date', () => {
    assert.equal(untilText('2026-05-08T09:05:00Z', { now, locale: 'en-GB', timeZone: 'UTC' }), 'until Fri 8 May, 09:05');
  });

  test('no time, no text', () => {
    assert.equal(untilText(null, { now }), '');
  });
});
