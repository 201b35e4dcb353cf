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

WEB_WORKERS = 4
WEB_THREADS = 1


def web_command(
    bin_dir: Path, host: str, port: int, workers: int = WEB_WORKERS, forwarded_allow_ips: str | None = None
) -> list[str]:
    """The REST API and pages on host:port: gunicorn's gthread workers (keep-alive).
    `forwarded_allow_ips`: the proxy's addresses, whose X-Forwarded-* headers are believed."""
    return [
        str(bin_dir / "gunicorn"), "sparks_site.wsgi:application",
        "--bind", f"{host}:{port}", "--workers", str(workers), "--worker-class", "gthread",
        "--threads", str(WEB_THREADS), "--log-level", "warning",
        *(["--forwarded-allow-ips", forwarded_allow_ips] if forwarded_allow_ips else []),
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
