"""`make serve-prod`: the whole product on one port, nginx in front of the production processes.

    python deploy/serve.py --port 8000 [--host 0.0.0.0] [--run-dir DIR] [--metrics-dir DIR]

Needs DATABASE_URL, REDIS_URL and SECRET_KEY in the environment; with TLS_CERT_FILE and
TLS_KEY_FILE nginx serves HTTPS on the port (plain HTTP sent there is redirected). In order:

1. empties the Prometheus multi-process directory (PROMETHEUS_MULTIPROC_DIR of every process);
2. migrates, collects the static files and runs the deployment checks (warnings are printed);
3. starts web, live, worker and beat (deploy/processes.py) with web and live on loopback ports
   only nginx is told about, then nginx, rendered from deploy/nginx.conf.template into the run
   directory (its pid, temporary files and config live there; errors go to stderr);
4. stops everything on Ctrl-C or SIGTERM, and when any process exits (a deployment's own
   supervisor, e.g. systemd, then restarts the whole), exiting non-zero in that case.

Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
PROJECT_DIR = DEPLOY_DIR.parent
sys.path.insert(0, str(PROJECT_DIR))

from deploy import processes  # noqa: E402  (after the project is importable)

REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
LOOPBACK = "127.0.0.1"
STOP_SECONDS = 20
# Run once before the servers start, in one Python process (Django starts once, not three times).
PREPARE = (
    "import django; django.setup(); from django.core.management import call_command; "
    "call_command('migrate', interactive=False, verbosity=0); "
    "call_command('collectstatic', interactive=False, verbosity=0); "
    "call_command('check', deploy=True)"
)


def log(message: str) -> None:
    print(f"serve-prod: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def app_environment(base: dict[str, str], tls: bool, metrics_dir: Path) -> dict[str, str]:
    """The environment of every Django process of the deployment (the production settings)."""
    env = {
        **base,
        "DJANGO_SETTINGS_MODULE": "sparks_site.settings",
        "DEBUG": "0",
        "BEAT_IN_PROCESS": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    if tls:
        # nginx terminates TLS and always sets X-Forwarded-Proto (a client's is dropped): Django
        # may believe it, and with it redirects plain HTTP (SECURE_SSL_REDIRECT's default).
        env["SECURE_PROXY_SSL_HEADER_X_FORWARDED_PROTO"] = "1"
    return env


def live_timeout_seconds(env: dict[str, str]) -> int:
    """nginx's read timeout for websockets and SSE: well above the heartbeat interval (a socket's
    longest silence) and the SSE keep-alive (15 s)."""
    heartbeat = int(env.get("PRESENCE_HEARTBEAT_INTERVAL_SECONDS") or 30)
    return max(300, 4 * heartbeat)


def render_nginx(
    run_dir: Path,
    host: str,
    port: int,
    web_addresses: Sequence[str],
    live_addresses: Sequence[str],
    static_root: Path,
    env: dict[str, str],
) -> Path:
    """nginx's config in `run_dir`, listening on host:port, in front of the web servers at
    `web_addresses` and the live servers at `live_addresses` ("host:port" each): serve-prod's one
    of each on loopback, or every node's of a deployment of several (README, "Several web nodes")."""
    cert, key = env.get("TLS_CERT_FILE", ""), env.get("TLS_KEY_FILE", "")
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls = ""
    if cert:
        listen += " ssl http2"
        tls = (
            f"ssl_certificate {Path(cert).resolve()};\n        ssl_certificate_key {Path(key).resolve()};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;\n"
            "        # Plain HTTP sent to the TLS port: redirected to HTTPS.\n"
            "        error_page 497 =301 https://$http_host$request_uri;"
        )
    user = ""
    if os.geteuid() == 0:
        # Run as root, nginx would start its workers as `nobody`, who may not read the static
        # files or write the temporary directories: they run as the rest of the deployment does.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
    values = {
        "user": user,
        "run_dir": str(run_dir),
        "mime_types": "/etc/nginx/mime.types",
        "deploy_dir": str(DEPLOY_DIR),
        "web_servers": _upstream_servers(web_addresses),
        "live_servers": _upstream_servers(live_addresses),
        "listen": listen,
        "tls": tls,
        "static_root": str(static_root.resolve()),
        "live_timeout": str(live_timeout_seconds(env)),
    }
    template = (DEPLOY_DIR / "nginx.conf.template").read_text()
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], template)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / name).mkdir(exist_ok=True)
    path = run_dir / "nginx.conf"
    path.write_text(text)
    return path


def _upstream_servers(addresses: Sequence[str]) -> str:
    if not addresses:
        raise ValueError("an upstream needs at least one server")
    return "\n        ".join(f"server {address};" for address in addresses)


def start_servers(
    supervisor: Supervisor, bin_dir: Path, host: str, web_port: int, live_port: int, web_workers: int, proxy: str
) -> None:
    """One node's web and live servers on host's ports, believing the forwarded headers of the
    proxy at address `proxy` only: what serve-prod runs behind its nginx, and each node of a
    deployment of several runs behind the shared one."""
    supervisor.start("web", processes.web_command(bin_dir, host, web_port, web_workers))
    supervisor.start("live", processes.live_command(bin_dir, host, live_port, forwarded_allow_ips=proxy))


class Supervisor:
    """Children in sessions of their own (a terminal's Ctrl-C reaches this process only), each
    stopped with its whole process group (granian's and Celery's workers too)."""

    def __init__(self, env: dict[str, str], log_dir: Path | None = None) -> None:
        self.env = env
        # Each child's output: `<name>.log` there, else this process's stdout and stderr.
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def start(self, name: str, command: list[str]) -> None:
        output = (self.log_dir / f"{name}.log").open("ab") if self.log_dir else None
        try:
            self.children[name] = subprocess.Popen(
                command, cwd=PROJECT_DIR, env=self.env, start_new_session=True, stdout=output, stderr=output
            )
        finally:
            if output is not None:
                output.close()  # the child has its own copy of the descriptor

    def watch(self) -> int:
        """Until a signal or a child's exit: 0 after a signal, 1 when a child exited."""
        while not self.stopping:
            for name, child in self.children.items():
                if child.poll() is not None:
                    log(f"{name} exited with {child.returncode}: stopping the others")
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        """nginx first, so that no new request comes in and the held websockets and SSE streams are
        closed (the live server waits for them before it exits); then the others, all at once."""
        deadline = time.monotonic() + STOP_SECONDS
        order = sorted(self.children, key=lambda name: name != "nginx")
        for name in order:
            child = self.children[name]
            if child.poll() is None:
                with _gone_is_fine():
                    os.killpg(child.pid, signal.SIGTERM)
            if name == "nginx":
                self._wait(name, child, min(deadline, time.monotonic() + 5))
        for name in order:
            self._wait(name, self.children[name], deadline)

    def _wait(self, name: str, child: subprocess.Popen, deadline: float) -> None:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {STOP_SECONDS} s: killed")
        # Whatever it left behind in its group (a pool worker) goes too.
        with _gone_is_fine():
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


class _gone_is_fine:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is ProcessLookupError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="address nginx listens on")
    parser.add_argument("--port", type=int, required=True, help="the one port")
    parser.add_argument("--run-dir", type=Path, default=PROJECT_DIR / ".serve-prod")
    parser.add_argument("--metrics-dir", type=Path, default=PROJECT_DIR / ".prometheus-multiproc")
    parser.add_argument("--web-workers", type=int, default=processes.WEB_WORKERS)
    parser.add_argument("--nginx", default=os.environ.get("NGINX", "/usr/sbin/nginx"))
    args = parser.parse_args(argv)

    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        log(f"set {', '.join(missing)} (see .env.example)")
        return 2
    tls = bool(os.environ.get("TLS_CERT_FILE"))
    if tls != bool(os.environ.get("TLS_KEY_FILE")):
        log("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
        return 2
    if not shutil.which(args.nginx):
        log(f"{args.nginx} not found: install Debian's nginx (apt-get install nginx)")
        return 2

    bin_dir = Path(sys.executable).parent
    run_dir, metrics_dir = args.run_dir.resolve(), args.metrics_dir.resolve()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = app_environment(dict(os.environ), tls, metrics_dir)

    log("migrating, collecting static files, checking the deployment settings")
    if subprocess.run([str(bin_dir / "python"), "-c", PREPARE], cwd=PROJECT_DIR, env=env).returncode:
        return 1
    static_root = Path(env.get("STATIC_ROOT") or PROJECT_DIR / "staticfiles")

    web_port, live_port = free_port(), free_port()
    config = render_nginx(
        run_dir, args.host, args.port, [f"{LOOPBACK}:{web_port}"], [f"{LOOPBACK}:{live_port}"], static_root, env
    )
    if subprocess.run([args.nginx, "-t", "-q", "-e", "stderr", "-p", str(run_dir), "-c", str(config)]).returncode:
        return 1

    supervisor = Supervisor(env)

    def on_signal(number: int, frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        start_servers(supervisor, bin_dir, LOOPBACK, web_port, live_port, args.web_workers, proxy=LOOPBACK)
        supervisor.start("worker", processes.worker_command(bin_dir))
        supervisor.start("beat", processes.beat_command(bin_dir))
        supervisor.start("nginx", [args.nginx, "-e", "stderr", "-p", str(run_dir), "-c", str(config)])
        scheme = "https" if tls else "http"
        log(f"serving on {scheme}://{args.host}:{args.port} (web :{web_port}, live :{live_port} on loopback)")
        code = supervisor.watch()
    finally:
        supervisor.stop()
    log("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
