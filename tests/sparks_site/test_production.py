"""The production setup, as an operator runs it: `make serve-prod` on PostgreSQL and Redis, with TLS,
used through its one port only.

The deployment gets a database of its own (created here, migrated by serve-prod, dropped after), a
`redis-server` of its own, a self-signed certificate for 127.0.0.1, and free ports. Through the one
port: the admin's login page and its CSS, the Swagger UI and its assets, devices and signals over
REST, a colleague's websocket and SSE stream receiving the change, the probes; and nginx's own
rules (plain HTTP redirected, a client's X-Forwarded-Proto not believed).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

from deploy import serve
from tests.real_processes import (
    NGINX,
    PrivateRedis,
    deployment_environment,
    eventually,
    free_port,
    nginx_available,
    seed_colleagues,
    throwaway_database,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60


def _serve_prod_command(port: int, workdir: Path, env: dict[str, str]) -> list[str]:
    """The command `make serve-prod` runs (make -n prints it without running it)."""
    printed = subprocess.run(
        ["make", "-s", "-n", "serve-prod", f"PORT={port}", "HOST=127.0.0.1", "WEB_WORKERS=1",
         f"RUN_DIR={workdir / 'run'}", f"METRICS_DIR={workdir / 'metrics'}", f"NGINX={NGINX}"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    command = shlex.split(printed.replace("\\\n", " "))
    assert command[1:2] == ["deploy/serve.py"], printed
    return command


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Production:
    base_url: str
    port: int
    tls: ssl.SSLContext
    env: dict[str, str]
    log: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, verify=self.tls, headers=headers, timeout=15)


@pytest.fixture
def own_database() -> Iterator[str]:
    """A PostgreSQL database of the deployment's own, beside the suite's, dropped after."""
    with throwaway_database(f"serve_{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.fixture
def production(tmp_path, own_database) -> Iterator[Production]:
    if not nginx_available():
        pytest.skip(f"nginx is not installed at {NGINX} and could not be installed")
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = {
        **deployment_environment(),
        "DATABASE_URL": own_database,
        "REDIS_URL": redis_server.url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "TLS_CERT_FILE": str(cert),
        "TLS_KEY_FILE": str(key),
        # Kept out of the working tree: the suite itself runs without collected static files.
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    log = tmp_path / "serve-prod.log"
    with log.open("wb") as out:
        # A direct child, stopped as Ctrl-C stops it; started exactly as the Makefile starts it.
        process = subprocess.Popen(_serve_prod_command(port, tmp_path, env), cwd=PROJECT_DIR, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    tls = ssl.create_default_context(cafile=str(cert))
    stack = Production(f"https://127.0.0.1:{port}", port, tls, env, log)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"serve-prod exited with {process.returncode}:\n{log.read_text()[-8000:]}")
            try:
                return httpx.get(f"{stack.base_url}/readyz", verify=tls, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually("serve-prod answers /readyz", ready, STARTUP_SECONDS, interval=0.3)
        yield stack
    except BaseException:
        print(f"--- serve-prod ---\n{log.read_text(errors='replace')[-8000:]}")
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()  # its children are left to the check below to report
                process.wait(10)
        redis_server.kill()
    # Stopped, nothing answers on the port any more (nginx went with the rest).
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _assets(page: str, kind: str) -> list[str]:
    return re.findall(rf'(?:href|src)="(/static/[^"]+\.{kind})"', page)


def _sse_reader(stack: Production, token: str, events: Queue) -> None:
    """Puts each (event, data) of the stream into `events` until the stream ends."""
    with stack.client(token) as client, client.stream("GET", "/api/v1/peers/stream", timeout=30) as response:
        events.put(("status", response.status_code))
        name = None
        try:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    events.put((name, json.loads(line[len("data: ") :])))
        except httpx.HTTPError:
            pass  # the deployment stopped under the open stream, at the test's end


def test_the_whole_product_answers_on_one_port(production: Production):
    stack = production
    with stack.client() as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").json()["failed"] == []

        # The admin with its styles: static files from collectstatic, hashed and cached for a year.
        login = anonymous.get("/admin/login/")
        assert login.status_code == 200
        assert "max-age=31536000" in login.headers["Strict-Transport-Security"]
        stylesheets = _assets(login.text, "css")
        assert stylesheets, login.text
        css = anonymous.get(stylesheets[0])
        assert css.status_code == 200
        assert css.headers["Content-Type"].startswith("text/css")
        assert "immutable" in css.headers["Cache-Control"]

        # The Swagger UI and its assets (drf-spectacular-sidecar's), and the schema it loads.
        swagger = anonymous.get("/api/schema/swagger-ui/")
        assert swagger.status_code == 200
        scripts, styles = _assets(swagger.text, "js"), _assets(swagger.text, "css")
        assert scripts and styles, swagger.text
        for path in scripts + styles:
            asset = anonymous.get(path)
            assert asset.status_code == 200, path
            assert ("javascript" if path.endswith(".js") else "text/css") in asset.headers["Content-Type"], path
        assert anonymous.get("/api/schema/").status_code == 200

        # nginx sets X-Forwarded-Proto itself: a client's "http" does not make Django redirect.
        assert anonymous.get("/admin/login/", headers={"X-Forwarded-Proto": "http"}).status_code == 200
    # Plain HTTP on the TLS port is sent to HTTPS.
    plain = httpx.get(f"http://127.0.0.1:{stack.port}/admin/login/", timeout=5)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{stack.port}/admin/login/"

    people = seed_colleagues(stack.env, "ada", "ben")
    ada, ben = people["ada"], people["ben"]

    # Ben watches over the websocket (token subprotocol) and over SSE, both through the one port.
    events: Queue = Queue()
    threading.Thread(target=_sse_reader, args=(stack, ben["token"], events), daemon=True).start()
    assert events.get(timeout=15) == ("status", 200)
    socket_url = f"wss://127.0.0.1:{stack.port}/ws/presence/"
    with connect(socket_url, ssl=stack.tls, subprotocols=["sparks.presence.v1", f"token.{ben['token']}"]) as ws:
        assert ws.subprotocol == "sparks.presence.v1"
        snapshot = json.loads(ws.recv(timeout=10))
        while not snapshot.get("last"):
            snapshot = json.loads(ws.recv(timeout=10))
        while (sse_event := events.get(timeout=10))[0] != "snapshot" or not sse_event[1]["last"]:
            pass

        # Ada signs a device in and starts a call over REST.
        with stack.client(ada["token"]) as api:
            device = api.post("/api/v1/devices", json={"installation_id": "ada-laptop", "label": "laptop"})
            assert device.status_code == 201, device.text
            signals = f"/api/v1/devices/{device.json()['device_id']}/signals"
            started = api.post(signals, json={"signals": [{"type": "heartbeat", "seq": 1}]})
            assert started.status_code == 202, started.text
            call = api.post(signals, json={"signals": [{"type": "call", "value": "start", "seq": 2}]})
            assert call.status_code == 202, call.text
            assert call.json()["status"] == "busy"

        def ada_busy(message: dict) -> bool:
            return message.get("user_id") == ada["id"] and message.get("status") == "busy"

        message = json.loads(ws.recv(timeout=10))
        while not (message.get("type") == "presence" and ada_busy(message)):
            message = json.loads(ws.recv(timeout=10))

    def sse_saw_ada_busy() -> bool:
        try:
            while True:
                name, data = events.get_nowait()
                if name == "presence" and ada_busy(data):
                    return True
        except Empty:
            return False

    eventually("the SSE stream receives Ada's change", sse_saw_ada_busy, 10)


def test_the_deployment_check_gives_no_warning_with_the_production_settings(tmp_path):
    """The environment serve-prod gives its Django processes (with TLS) passes `check --deploy`."""
    base = {**deployment_environment(), "SECRET_KEY": secrets.token_urlsafe(50)}
    env = serve.app_environment(base, tls=True, metrics_dir=tmp_path)
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_when_one_process_exits_the_supervisor_stops_the_others():
    supervisor = serve.Supervisor(dict(os.environ))
    # A server that would run for a minute, with a child of its own (as gunicorn has workers).
    supervisor.start("server", ["sh", "-c", "sleep 60 & sleep 60"])
    supervisor.start("crashing", [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"])
    try:
        assert supervisor.watch() == 1
    finally:
        supervisor.stop()
    assert supervisor.children["crashing"].returncode == 3
    assert supervisor.children["server"].returncode == -signal.SIGTERM
    # Its whole process group went with it (an orphan may linger as a zombie until reaped, and a
    # killed process takes a moment to become one).
    group = supervisor.children["server"].pid
    eventually("the server's process group is gone", lambda: _live_members_of_group(group) == [], 5)


def _live_members_of_group(group: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
