"""The client processes of the reconnect storm (bench/_fanout_storm.py): each holds a share of the
sockets and answers the driver's steps, one JSON line in and out on stdin and stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time

DECODER = json.JSONDecoder()
CONNECT_ATTEMPTS = 8


def raise_fd_limit(needed: int) -> None:
    """A socket is a file descriptor: raise the soft limit to what is needed, up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        raise SystemExit(f"{needed} file descriptors are needed (ulimit -n)")


def entries_of(page: bytes, user_ids: list[str]) -> dict[str, dict]:
    """The entries of `user_ids` in a snapshot page, found without decoding or parsing the page."""
    found = {}
    for user_id in user_ids:
        at = page.find(b'"user_id": "%s"' % user_id.encode())
        if at >= 0:
            start = page.rfind(b"{", 0, at)
            # An entry is a few hundred bytes: a window holds it whole (a character cut at its end is dropped).
            found[user_id], _ = DECODER.raw_decode(page[start : start + 8192].decode(errors="ignore"))
    return found


def page_number(page: bytes) -> tuple[int, bool]:
    """A page's `page` and `last`, read from its end (as the server writes them)."""
    tail = page[page.rfind(b'"page": ') :]
    return int(tail[8 : tail.index(b",")]), tail.endswith(b"true}")


class Client:
    def __init__(self, plan: dict, part: int) -> None:
        self.plan = plan
        count, parts = len(plan["tokens"]), plan["client_processes"]
        self.indices = list(range(part * count // parts, (part + 1) * count // parts))
        self.changers = plan["user_ids"][: plan["storm_changers"]]
        self.known: dict[int, dict[str, str]] = {}  # socket index → changer → status
        self.sockets: dict[int, object] = {}
        self.ready_at: dict[int, float] = {}
        self.retries = 0
        self.failures: list[str] = []
        self.bytes = 0
        self.wrong_pages = 0
        self.full_checks = 0
        self.bad_snapshots = 0
        self.stray = 0
        self.closed: list[int | None] = []
        self.expect: dict = {"n": -1, "status": None, "received": {}, "done": asyncio.Event()}
        self.arrivals: dict[int, list[float]] = {}

    async def connect(self, index: int, limit: asyncio.Semaphore) -> None:
        import websockets

        plan = self.plan
        port = plan["ws_ports"][index % len(plan["ws_ports"])]
        url = f"ws://127.0.0.1:{port}/ws/presence/?token={plan['tokens'][index]}"
        own_id = plan["user_ids"][index]
        async with limit:
            for attempt in range(CONNECT_ATTEMPTS):
                try:
                    ws = await websockets.connect(
                        url, max_size=None, compression=None, open_timeout=120, ping_interval=None, close_timeout=1
                    )
                    pages = await self.read_snapshot(ws)
                    break
                except (OSError, TimeoutError, websockets.WebSocketException) as error:
                    self.retries += 1
                    if attempt == CONNECT_ATTEMPTS - 1:
                        self.failures.append(repr(error))
                        return
                    await asyncio.sleep(0.5 * (attempt + 1))
        self.ready_at[index] = time.perf_counter()
        self.sockets[index] = ws
        known = entries_of(pages[0], self.changers)
        for page in pages[1:]:  # a changer missing from the first page (oneself aside)
            if len(known) + (own_id in self.changers) < len(self.changers):
                known |= entries_of(page, [c for c in self.changers if c not in known])
        self.known[index] = {user_id: entry["status"] for user_id, entry in known.items()}
        if index % plan["full_check_every"] == 0:
            self.check_whole(pages, own_id, known)
        asyncio.get_running_loop().create_task(self.listen(index, ws))

    async def read_snapshot(self, ws) -> list[bytes]:
        pages = []
        while True:
            page = await ws.recv(decode=False)  # 2 MB a socket for 10,000 members: left undecoded
            self.bytes += len(page)
            number, last = page_number(page)
            if number != len(pages) + 1:
                self.wrong_pages += 1
            pages.append(page)
            if last:
                return pages

    def check_whole(self, pages: list[bytes], own_id: str, known: dict[str, dict]) -> None:
        self.full_checks += 1
        ids = [peer["user_id"] for page in pages for peer in json.loads(page)["peers"]]
        others = set(self.plan["user_ids"]) - {own_id}
        whole = {peer["user_id"]: peer for page in pages for peer in json.loads(page)["peers"]}
        if len(ids) != len(others) or set(ids) != others:
            self.bad_snapshots += 1
            self.failures.append(f"snapshot of {own_id}: {len(ids)} entries, not everyone but itself once")
        elif any(whole[user_id] != entry for user_id, entry in known.items()):
            self.bad_snapshots += 1
            self.failures.append(f"snapshot of {own_id}: a changer's entry read wrong")

    async def listen(self, index: int, ws) -> None:
        import websockets

        changers = set(self.changers)
        known = self.known[index]
        try:
            async for text in ws:
                message = json.loads(text)
                user_id = message.get("user_id")
                if message.get("type") != "presence" or user_id not in changers:
                    self.stray += 1
                    continue
                known[user_id] = message["status"]
                expect = self.expect
                waited = user_id == self.changers[0] and message["status"] == expect["status"]
                if waited and index not in expect["received"]:
                    expect["received"][index] = time.perf_counter()
                    if len(expect["received"]) == len(self.sockets):
                        expect["done"].set()
        except websockets.ConnectionClosed:
            pass
        self.closed.append(ws.close_code)

    async def warm(self) -> dict:
        """One socket to each server, closed again: the servers' code loaded before memory is read."""
        import websockets

        plan = self.plan
        for port in plan["ws_ports"]:
            url = f"ws://127.0.0.1:{port}/ws/presence/?token={plan['tokens'][self.indices[0]]}"
            async with websockets.connect(url, max_size=None, compression=None, ping_interval=None) as ws:
                await self.read_snapshot(ws)
        self.bytes = 0
        return {"warm": True}

    async def storm(self) -> dict:
        started = time.perf_counter()
        limit = asyncio.Semaphore(self.plan["connect_concurrency"])
        connecting = asyncio.gather(*(self.connect(index, limit) for index in self.indices))
        # Those still connecting at the timeout are given up, counted as never connected.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connecting, self.plan["storm_timeout"])
        ready = sorted(self.ready_at.values())
        return {
            "started": started,
            "ready": ready,
            "connected": len(self.sockets),
            "retries": self.retries,
            "failures": self.failures[:5],
            "failed": len(self.failures),
            "bytes": self.bytes,
            "wrong_pages": self.wrong_pages,
            "full_checks": self.full_checks,
            "bad_snapshots": self.bad_snapshots,
        }

    def verify(self, expected: dict[str, str]) -> dict:
        wrong, examples = 0, []
        for index, known in self.known.items():
            own_id = self.plan["user_ids"][index]
            for user_id, status in expected.items():
                if user_id != own_id and known.get(user_id) != status:
                    wrong += 1
                    if len(examples) < 5:
                        examples.append([index, user_id, known.get(user_id), status])
        return {"checked": len(self.known), "wrong": wrong, "examples": examples}

    def expecting(self, n: int, status: str) -> dict:
        self.expect = {"n": n, "status": status, "received": {}, "done": asyncio.Event()}
        return {"expecting": n}

    async def wait_for(self, timeout: float) -> dict:
        expect = self.expect
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(expect["done"].wait(), timeout)
        self.arrivals[expect["n"]] = sorted(expect["received"].values())
        return {"got": expect["n"], "missing": len(self.sockets) - len(expect["received"])}


async def client_main(plan: dict, part: int) -> None:
    raise_fd_limit(len(plan["tokens"]) // plan["client_processes"] + 256)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    client = Client(plan, part)

    def say(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say({"ready": part})
    while line := await commands.readline():
        command = json.loads(line)
        step = command["step"]
        if step == "warm":
            say(await client.warm())
        elif step == "storm":
            say(await client.storm())
        elif step == "verify":
            say(client.verify(command["expected"]))
        elif step == "expect":
            say(client.expecting(command["n"], command["status"]))
            say(await client.wait_for(command["timeout"]))
        elif step == "report":
            say({"arrivals": client.arrivals, "stray": client.stray, "closed": client.closed})
        elif step == "close":
            await asyncio.gather(*(ws.close() for ws in client.sockets.values()), return_exceptions=True)
            return
