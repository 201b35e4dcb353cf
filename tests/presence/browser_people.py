"""Helpers of the two-person browser tests (tests/presence/test_people_browser.py): a presence
server of the test's own, people signed in in a browser context each, and timing what one person's
page shows of the other's change.

Times are wall-clock milliseconds (`Date.now()` in the pages, `time.time()` here): the browser and
the tests run on one machine and read one clock.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orgs.models import User
from tests.real_processes import RunningServer, make_run_environment, runserver

# The delays measured in this run, shown at the end of the run (see tests/presence/conftest.py).
DELAYS = pytest.StashKey[list[dict[str, Any]]]()

# The server's timings, short for the tests (a deployment's defaults: 30 s, 120 s, 300 s, 5 s).
SERVER_TIMINGS = {
    "PRESENCE_HEARTBEAT_INTERVAL_SECONDS": "1",
    "PRESENCE_DEVICE_TIMEOUT_SECONDS": "3",
    "PRESENCE_IDLE_TIMEOUT_SECONDS": "300",
    "PRESENCE_SWEEP_INTERVAL_SECONDS": "1",
}

# Installed in every page before its own scripts run.
#
# In the watching page: every change of what a `[data-user-id]` element shows in `data-status`
# (an attribute changed, or the element replaced), with the moment it was seen, in
# `window.__statusLog`. A MutationObserver's callback runs right after the DOM change, so the
# moment is the moment the page showed it.
#
# In the watched page: the moment of the last pointer or keyboard input (`window.__lastInputAt`);
# and, told to the test through a binding (`Person.network`), every message the client sent on a
# websocket, every request it made to the devices API, and its websockets opening and closing.
INSTRUMENTATION = """
(() => {
  window.__statusLog = [];
  const shown = new Map();
  const scan = () => {
    const now = Date.now();
    const done = new Set();
    for (const element of document.querySelectorAll('[data-user-id]')) {
      const id = element.getAttribute('data-user-id');
      if (done.has(id)) continue;
      done.add(id);
      const status = element.getAttribute('data-status');
      if (shown.get(id) !== status) {
        shown.set(id, status);
        window.__statusLog.push({ id, status, at: now });
      }
    }
  };
  new MutationObserver(scan).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ['data-status', 'data-user-id'],
  });

  window.__lastInputAt = null;
  for (const type of ['pointerdown', 'pointermove', 'keydown', 'touchstart', 'wheel']) {
    document.addEventListener(type, () => { window.__lastInputAt = Date.now(); }, true);
  }

  // Told to the test as it happens (the test's binding), so that it is known after the page is gone.
  const note = (entry) => window.__sparksTestNote && window.__sparksTestNote(entry);
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('open', () => note({ kind: 'ws open', at: Date.now() }));
      this.addEventListener('close', (event) => note({ kind: 'ws close', at: Date.now(), code: event.code }));
    }
    send(data) {
      let kind = 'ws';
      try { kind = `ws ${JSON.parse(data).type}`; } catch {}
      note({ kind, at: Date.now(), data: String(data).slice(0, 300) });
      return super.send(data);
    }
  };
  const fetch = window.fetch;
  window.fetch = function (input, init) {
    const url = String((input && input.url) || input);
    if (url.includes('/api/v1/devices')) {
      note({ kind: `rest ${(init && init.method) || 'GET'}`, at: Date.now(), data: url });
    }
    return fetch.apply(this, arguments);
  };
})();
"""


def now_ms() -> float:
    return time.time() * 1000


def server_environment(**overrides: str) -> dict[str, str]:
    """`make run`'s embedded default on the test database, with the short timings and `overrides`."""
    return make_run_environment(
        BEAT_IN_PROCESS="1",
        # A signal a second per device, more than a deployment's 120 a minute allows on a busy page.
        PRESENCE_RATE_LIMIT_DEVICE="6000/m",
        PRESENCE_RATE_LIMIT_USER="6000/m",
        **{**SERVER_TIMINGS, **overrides},
    )


@contextlib.contextmanager
def presence_server(log_path: Path, **overrides: str) -> Iterator[RunningServer]:
    with runserver(server_environment(**overrides), log_path) as server:
        yield server


@dataclass
class Person:
    """Someone signed in in a browser context of their own, with the page at `/` open."""

    name: str
    user: User
    context: Any  # playwright BrowserContext
    page: Any  # playwright Page
    network: list[dict[str, Any]] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        return str(self.user.public_id)

    def status_shown_of(self, other: Person):
        return self.page.locator(f'[data-user-id="{other.user_id}"]').first

    def status_log(self, other: Person) -> list[dict[str, Any]]:
        return [entry for entry in self.page.evaluate("window.__statusLog") if entry["id"] == other.user_id]

    @staticmethod
    def describe(entry: dict[str, Any]) -> str:
        """`ws signals (network=offline)`, `rest POST /api/v1/devices`, ..."""
        if entry["kind"] == "ws signals":
            signals = json.loads(entry["data"])["signals"]
            named = (
                f"{signal['type']}={signal['value']}" if "value" in signal else signal["type"] for signal in signals
            )
            return f"ws signals ({', '.join(named)})"
        return f"{entry['kind']} {entry.get('data', '')}".strip()

    def signals_sent(self) -> list[dict[str, Any]]:
        """The signals the page's client sent (signing in, REST signals, websocket messages)."""
        return [entry for entry in self.network if entry["kind"] not in ("ws open", "ws close", "ws subscribe")]

    def wait_for_heartbeat_on_the_socket(self, timeout: float = 10.0) -> None:
        """Until the client beats on its websocket: signed in, live, and past its first requests."""
        deadline = time.monotonic() + timeout
        while not any(entry["kind"] == "ws signals" for entry in self.signals_sent()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}'s page sent no heartbeat on a websocket: {self.network}")
            self.page.wait_for_timeout(50)  # Playwright's loop runs meanwhile: the binding's calls arrive

    def wait_for_next_heartbeat(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next heartbeat the client sends on its websocket, once sent: acting right after it,
        a test knows the last signal before its action (the next one is a heartbeat interval away)."""
        seen = len(self.network)
        deadline = time.monotonic() + timeout
        while True:
            beats = [entry for entry in self.network[seen:] if entry["kind"] == "ws signals"]
            if beats:
                return beats[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}'s page sent no heartbeat within {timeout} s: {self.network}")
            self.page.wait_for_timeout(5)

    def last_signal_sent_before(self, moment_ms: float) -> dict[str, Any] | None:
        sent = [entry for entry in self.signals_sent() if entry["at"] <= moment_ms]
        return sent[-1] if sent else None


def choose(page, selector: str) -> str:
    """Click `selector` as a person would; a choice the page keeps in a closed menu is clicked
    through the DOM instead (the tests do not know how the page's menu opens). How it was done."""
    locator = page.locator(selector).first
    if locator.is_visible():
        locator.click()
        return "clicked"
    locator.dispatch_event("click")
    return "click event (hidden)"


def fill_in(page, selector: str, value: str) -> None:
    """Choose an option of a `<select>` or type into an input, as `choose` does."""
    locator = page.locator(selector).first
    is_select = locator.evaluate("(element) => element.tagName === 'SELECT'")
    if locator.is_visible():
        if is_select:
            locator.select_option(value)
        else:
            locator.fill(value)
        return
    locator.evaluate(
        """(element, value) => {
          element.value = value;
          element.dispatchEvent(new Event('input', { bubbles: true }));
          element.dispatchEvent(new Event('change', { bubbles: true }));
        }""",
        value,
    )


def sees(watcher: Person, other: Person, status: str, *, since_ms: float, timeout: float = 15.0, about=str) -> float:
    """Wait until `watcher`'s page shows `other` with `status` (a change seen at `since_ms` or
    later); the wall-clock moment (ms) the page showed it."""
    deadline = time.monotonic() + timeout
    while True:
        log = watcher.status_log(other)
        for entry in log:
            if entry["at"] >= since_ms and entry["status"] == status:
                return entry["at"]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{watcher.name}'s page did not show {other.name} {status} within {timeout} s;"
                f" it showed: {[(e['status'], round(e['at'] - since_ms)) for e in log]}\n{about()}"
            )
        time.sleep(0.02)


@dataclass
class Measurements:
    """The delays one test measured, kept for the run's summary and written next to the test's files."""

    test: str
    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    sink: list[dict[str, Any]] | None = None
    record_property: Callable[[str, object], None] | None = None

    def record(self, case: str, delay_ms: float, measured_from: str, **details: Any) -> float:
        row = {"test": self.test, "case": case, "delay_ms": round(delay_ms), "from": measured_from, **details}
        self.rows.append(row)
        if self.sink is not None:
            self.sink.append(row)
        if self.record_property is not None:  # in a JUnit XML report (--junitxml) too
            self.record_property(f"delay_ms: {case}, from {measured_from}", row["delay_ms"])
        self.path.write_text(json.dumps(self.rows, indent=2, ensure_ascii=False))
        return delay_ms
