"""The HTTP and websocket servers the heartbeat benchmark can put side by side.

`prod` is what `make serve-prod` runs: its command line comes from `deploy/processes.py` itself,
never from a copy here, so the benchmark measures exactly the production processes. The others
are the candidates that production was chosen from (BENCHMARKS.md, section 3), kept so the
choice can be measured again on another machine or another release of the servers.

Each entry maps a name to (a description, a function `(bin_dir, host, port) -> argv`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy import processes  # the repository root, on the path from here on

Command = Callable[[Path, str, int], list[str]]

WSGI_APP = "sparks_site.wsgi:application"
ASGI_APP = "sparks_site.asgi:application"


def gunicorn_gthread(workers: int, threads: int) -> Command:
    def command(bin_dir: Path, host: str, port: int) -> list[str]:
        return [
            str(bin_dir / "gunicorn"), WSGI_APP, "--bind", f"{host}:{port}", "--workers", str(workers),
            "--worker-class", "gthread", "--threads", str(threads), "--log-level", "warning",
        ]  # fmt: skip

    return command


def granian_wsgi(workers: int, blocking_threads: int = 1, *extra: str) -> Command:
    def command(bin_dir: Path, host: str, port: int) -> list[str]:
        return [
            str(bin_dir / "granian"), "--interface", "wsgi", WSGI_APP, "--host", host, "--port", str(port),
            "--workers", str(workers), "--blocking-threads", str(blocking_threads), "--http", "1", "--no-ws",
            "--log-level", "warning", *extra,
        ]  # fmt: skip

    return command


def uvicorn_asgi(workers: int) -> Command:
    def command(bin_dir: Path, host: str, port: int) -> list[str]:
        return [
            str(bin_dir / "uvicorn"), ASGI_APP, "--host", host, "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
            "--lifespan", "off", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    return command


def granian_asgi(workers: int, *extra: str) -> Command:
    def command(bin_dir: Path, host: str, port: int) -> list[str]:
        return [
            str(bin_dir / "granian"), "--interface", "asgi", ASGI_APP, "--host", host, "--port", str(port),
            "--workers", str(workers), "--http", "1", "--ws", "--loop", "uvloop", "--log-level", "warning", *extra,
        ]  # fmt: skip

    return command


def _prod_web(bin_dir: Path, host: str, port: int) -> list[str]:
    return processes.web_command(bin_dir, host, port)


def _prod_web_without_lane(bin_dir: Path, host: str, port: int) -> list[str]:
    # The same processes with the heartbeat lane left out (`sparks_site.wsgi`): what the lane is worth.
    return ["env", "SPARKS_HEARTBEAT_LANE=off", *processes.web_command(bin_dir, host, port)]


def _prod_live(bin_dir: Path, host: str, port: int) -> list[str]:
    return processes.live_command(bin_dir, host, port)


def _baseline_root() -> str:
    root = os.environ.get("BENCH_BASELINE_ROOT", "")
    if not root:
        raise SystemExit("prod-baseline needs BENCH_BASELINE_ROOT: a copy of the code to compare with (git archive)")
    return root


# The production processes of another copy of the code (BENCH_BASELINE_ROOT, e.g. `git archive main`
# unpacked), side by side with this one's in the same run: what a change costs, in pairs measured
# seconds apart rather than in runs hours apart. Same database; a Redis db and a worker of their
# own (BENCH_BASELINE_REDIS_URL, `in_baseline`), so that each copy's writes behind and sweeps are
# paid by its own worker whatever either copy's hot-store layout. Started in that directory: the
# servers put their working directory first on the import path.
def in_baseline(command: list[str]) -> list[str]:
    """`command` run in the baseline copy of the code, on the baseline's Redis db."""
    script = 'cd "$0" && REDIS_URL="${BENCH_BASELINE_REDIS_URL:-$REDIS_URL}" exec "$@"'
    return ["sh", "-c", script, _baseline_root(), *command]


def _prod_web_baseline(bin_dir: Path, host: str, port: int) -> list[str]:
    return in_baseline(processes.web_command(bin_dir, host, port))


def _prod_live_baseline(bin_dir: Path, host: str, port: int) -> list[str]:
    return in_baseline(processes.live_command(bin_dir, host, port))


# REST: the signals endpoint. WSGI servers get the heartbeat lane (`sparks_site.wsgi`); ASGI ones
# serve Django's ASGI handler (`sparks_site.asgi`), which has no such lane.
REST_SERVERS: dict[str, tuple[str, Command]] = {
    "prod": ("deploy/processes.py web_command", _prod_web),
    "prod-no-lane": ("deploy/processes.py web_command, SPARKS_HEARTBEAT_LANE=off", _prod_web_without_lane),
    "prod-baseline": ("prod, of the copy of the code at BENCH_BASELINE_ROOT", _prod_web_baseline),
    "gunicorn-gthread-4x1": ("gunicorn gthread, 4 workers x 1 thread", gunicorn_gthread(4, 1)),
    "gunicorn-gthread-2x4": ("gunicorn gthread, 2 workers x 4 threads", gunicorn_gthread(2, 4)),
    "granian-wsgi-1": ("granian WSGI, 1 worker x 1 blocking thread", granian_wsgi(1)),
    "granian-wsgi-2": ("granian WSGI, 2 workers x 1 blocking thread", granian_wsgi(2)),
    "granian-wsgi-3": ("granian WSGI, 3 workers x 1 blocking thread", granian_wsgi(3)),
    "granian-wsgi-4": ("granian WSGI, 4 workers x 1 blocking thread", granian_wsgi(4)),
    "granian-wsgi-2x2": ("granian WSGI, 2 workers x 2 blocking threads", granian_wsgi(2, 2)),
    "granian-wsgi-2-bp4": (
        "granian WSGI, 2 workers, backpressure 4, single-threaded runtime",
        granian_wsgi(2, 1, "--backpressure", "4", "--runtime-mode", "st"),
    ),
    "uvicorn-asgi-2": ("uvicorn, Django ASGI, 2 workers", uvicorn_asgi(2)),
    "granian-asgi-2": ("granian ASGI, Django ASGI, 2 workers", granian_asgi(2)),
}

# Websockets (and SSE): the ASGI application.
WS_SERVERS: dict[str, tuple[str, Command]] = {
    "prod": ("deploy/processes.py live_command", _prod_live),
    "prod-baseline": ("prod, of the copy of the code at BENCH_BASELINE_ROOT", _prod_live_baseline),
    "uvicorn": ("uvicorn 1 worker (uvloop, httptools, websockets-sansio, no deflate)", uvicorn_asgi(1)),
    "granian-asgi-1": ("granian ASGI, 1 worker, uvloop", granian_asgi(1)),
    "granian-asgi-1-rust": ("granian ASGI, 1 worker, uvloop, rust tasks", granian_asgi(1, "--task-impl", "rust")),
    "granian-asgi-2": ("granian ASGI, 2 workers, uvloop", granian_asgi(2)),
    "uvicorn-2": ("uvicorn 2 workers", uvicorn_asgi(2)),
}

# What `--compare` puts side by side with production (any of the above can be named with
# --rest-servers / --ws-servers instead).
COMPARE_REST = (
    "prod",
    "gunicorn-gthread-4x1",
    "granian-wsgi-1",
    "granian-wsgi-3",
    "granian-wsgi-2x2",
    "granian-wsgi-2-bp4",
    "uvicorn-asgi-2",
    "granian-asgi-2",
)
COMPARE_WS = ("prod", "uvicorn-2", "granian-asgi-1", "granian-asgi-2")


def same_as_prod(kind: str, name: str) -> bool:
    """Whether candidate `name` runs exactly the production command line."""
    table = REST_SERVERS if kind == "rest" else WS_SERVERS
    probe = (Path("bin"), "127.0.0.1", 1)
    return table[name][1](*probe) == table["prod"][1](*probe)
