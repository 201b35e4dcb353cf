"""A local stand-in for Entra ID sign-in and Microsoft Graph's presence API, over TLS.

msal only talks https, so the fake serves TLS with a throwaway self-signed certificate that the
tests trust through INTEGRATIONS_CA_BUNDLE. It follows the documented shapes: OIDC discovery and
the client-credentials token endpoint per tenant; setPresence / clearPresence (404 without a
session) / setUserPreferredPresence / clearUserPreferredPresence with only the accepted pairs
(400 otherwise); getPresencesByUserId (at most 650 ids). Faults can be queued (429 with
Retry-After, 503) or the whole service taken down.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SESSION_PAIRS = {
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
}
PREFERRED_PAIRS = {
    ("Available", "Available"),
    ("Busy", "Busy"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("BeRightBack", "BeRightBack"),
    ("Away", "Away"),
    ("Offline", "OffWork"),
}
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?$")


def write_self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway CA (the file clients trust) and a server certificate for 127.0.0.1 it signed.

    Returns (the CA certificate, the server's certificate chain and key in one file)."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SPARKS test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, server_path = directory / "fake-microsoft-ca.pem", directory / "fake-microsoft-server.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_path.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, server_path


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict = field(default_factory=dict)


@dataclass
class Call:
    path: str
    body: dict


class FakeMicrosoft:
    def __init__(self, directory: Path) -> None:
        self.cert_path, key_path = write_self_signed_certificate(directory)
        self.lock = threading.Lock()
        self.apps: dict[tuple[str, str], str] = {}  # (tenant, client id) → secret
        self.tokens: dict[str, tuple[str, str]] = {}  # token → (tenant, client id)
        self.reset()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(key_path)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.calls: list[Call] = []
            self.sessions: dict[tuple[str, str], dict] = {}  # (user, session id) → presence
            self.preferred: dict[str, dict] = {}
            self.presences: dict[str, tuple[str, str]] = {}  # what getPresencesByUserId answers
            self.faults: deque[Fault] = deque()
            self.down = False
            self.token_requests = 0

    def register_app(self, tenant_id: str, client_id: str, secret: str) -> None:
        self.apps[(tenant_id, client_id)] = secret

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def graph_calls(self, suffix: str = "") -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path.endswith(suffix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _duration_minutes(value: str) -> int | None:
    match = _DURATION.match(value or "")
    if not match or not any(match.groups()):
        return None
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def _handler(fake: FakeMicrosoft):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, body: dict | None = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            match = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", self.path)
            if not match:
                return self._reply(404, {"error": "not_found"})
            tenant = match.group(1)
            base = f"{fake.base_url}/{tenant}"
            self._reply(
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                },
            )

        def do_POST(self) -> None:
            raw = self._body()
            token_match = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", self.path)
            if token_match:
                return self._token(token_match.group(1), parse_qs(raw.decode()))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._reply(400, {"error": {"code": "BadRequest"}})
            with fake.lock:
                fake.calls.append(Call(self.path, body))
                if fake.down:
                    return self._reply(503, {"error": {"code": "ServiceUnavailable"}})
                if fake.faults:
                    fault = fake.faults.popleft()
                    return self._reply(
                        fault.status, fault.body or {"error": {"code": str(fault.status)}}, fault.headers
                    )
            authorization = self.headers.get("Authorization", "")
            app = fake.tokens.get(authorization.removeprefix("Bearer "))
            if app is None:
                return self._reply(401, {"error": {"code": "InvalidAuthenticationToken"}})
            self._graph(app, body)

        def _token(self, tenant: str, form: dict[str, list[str]]) -> None:
            client_id = (form.get("client_id") or [""])[0]
            secret = (form.get("client_secret") or [""])[0]
            scope = (form.get("scope") or [""])[0]
            grant = (form.get("grant_type") or [""])[0]
            if grant != "client_credentials" or fake.apps.get((tenant, client_id)) != secret:
                return self._reply(401, {"error": "invalid_client", "error_description": "AADSTS7000215"})
            if "https://graph.microsoft.com/.default" not in scope.split():
                return self._reply(400, {"error": "invalid_scope"})
            token = secrets.token_urlsafe(24)
            fake.tokens[token] = (tenant, client_id)
            fake.token_requests += 1
            self._reply(
                200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
            )

        def _graph(self, app: tuple[str, str], body: dict) -> None:
            _, client_id = app
            path = self.path.removeprefix("/v1.0")
            if path == "/communications/getPresencesByUserId":
                ids = body.get("ids")
                if not isinstance(ids, list) or not ids or len(ids) > 650:
                    return self._reply(400, {"error": {"code": "BadRequest"}})
                value = [
                    {"id": i, "availability": fake.presences[i][0], "activity": fake.presences[i][1]}
                    for i in ids
                    if i in fake.presences
                ]
                return self._reply(200, {"value": value})
            match = re.fullmatch(r"/users/([^/]+)/presence/(\w+)", path)
            if not match:
                return self._reply(404, {"error": {"code": "NotFound"}})
            user, action = match.groups()
            pair = (body.get("availability"), body.get("activity"))
            with fake.lock:
                if action == "setPresence":
                    minutes = _duration_minutes(body.get("expirationDuration", "PT5M"))
                    if body.get("sessionId") != client_id or pair not in SESSION_PAIRS:
                        return self._reply(400, {"error": {"code": "BadRequest"}})
                    if minutes is None or not 5 <= minutes <= 240:
                        return self._reply(400, {"error": {"code": "BadRequest"}})
                    fake.sessions[(user, client_id)] = {"availability": pair[0], "activity": pair[1]}
                    return self._reply(200)
                if action == "clearPresence":
                    if fake.sessions.pop((user, body.get("sessionId")), None) is None:
                        return self._reply(404, {"error": {"code": "NotFound"}})
                    return self._reply(200)
                if action == "setUserPreferredPresence":
                    if pair not in PREFERRED_PAIRS or "sessionId" in body:
                        return self._reply(400, {"error": {"code": "BadRequest"}})
                    fake.preferred[user] = {"availability": pair[0], "activity": pair[1]}
                    return self._reply(200)
                if action == "clearUserPreferredPresence":
                    fake.preferred.pop(user, None)
                    return self._reply(200)
            self._reply(404, {"error": {"code": "NotFound"}})

    return Handler
