"""The production processes of SPARKS Presence, defined once.

`make serve-prod` starts these (behind the proxy), the benchmarks measure exactly these, and the
production test runs them. Each function returns an argument list; `bin_dir` is the virtualenv's
`bin/` (its `python`, servers and `celery` are used from there).

- web: the REST API and the pages (WSGI, with the heartbeat lane in front of Django);
- live: the websockets and the SSE stream (ASGI);
- worker and beat: Celery (the tasks, and the periodic jobs: the expiry sweep, the writes behind).
"""

from __future__ import annotations

from pathlib import Path

# Chosen by measurement (BENCHMARKS.md, section 3: `bench/heartbeat_ingest.py --compare`).
# Two processes on one core outdo one: while one waits on Redis for its heartbeat the other runs.
WEB_WORKERS = 2
# One request at a time per process: the heartbeat's work is Python under the GIL plus one Redis
# round trip, so more threads only add contention; more processes overlap the waits instead.
WEB_THREADS = 1


def web_command(bin_dir: Path, host: str, port: int, workers: int = WEB_WORKERS) -> list[str]:
    """The REST API and pages on host:port: granian's WSGI server, `workers` processes.

    granian parses HTTP and keeps connections alive in Rust, outside the GIL: the REST heartbeat
    went from 3,284 (gunicorn gthread 4x1) to 7,322 req/s on one core. HTTP/1.1 only (the proxy
    speaks it), no websockets (the live process has them), a failed worker is started again (as
    gunicorn's arbiter does). No access log: Django's request log writes one line per request.
    Forwarded headers: granian rewrites nothing from them; it listens where only the proxy reaches
    it, and Django believes the proxy's X-Forwarded-Proto itself (SECURE_PROXY_SSL_HEADER)."""
    return [
        str(bin_dir / "granian"), "--interface", "wsgi", "sparks_site.wsgi:application",
        "--host", host, "--port", str(port), "--workers", str(workers), "--blocking-threads", str(WEB_THREADS),
        "--http", "1", "--no-ws", "--respawn-failed-workers", "--log-level", "warning",
    ]  # fmt: skip


def live_command(bin_dir: Path, host: str, port: int, forwarded_allow_ips: str | None = None) -> list[str]:
    """Websockets and SSE on host:port: uvicorn with uvloop, httptools and the sans-I/O websockets,
    without per-message compression (the messages are small: deflate cost more than it saved).
    `forwarded_allow_ips`: the proxy's addresses, whose X-Forwarded-* headers are believed."""
    return [
        str(bin_dir / "uvicorn"), "sparks_site.asgi:application", "--host", host, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
        "--lifespan", "off", "--no-access-log", "--log-level", "warning",
        *(["--proxy-headers", "--forwarded-allow-ips", forwarded_allow_ips] if forwarded_allow_ips else []),
    ]  # fmt: skip


def worker_command(bin_dir: Path) -> list[str]:
    return [str(bin_dir / "celery"), "-A", "sparks_site", "worker", "--loglevel=INFO"]


def beat_command(bin_dir: Path) -> list[str]:
    return [str(bin_dir / "celery"), "-A", "sparks_site", "beat", "--loglevel=INFO"]
