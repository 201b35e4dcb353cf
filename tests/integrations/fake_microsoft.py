"""A local stand-in for Entra ID sign-in and Microsoft Graph's presence API, over TLS.

msal only talks https, so the fake serves TLS with a throwaway self-signed certificate that the
tests trust through INTEGRATIONS_CA_BUNDLE. It follows the documented shapes: OIDC discovery and
the client-credentials token endpoint per tenant; setPresence / clearPresence (404 without a
session) / setUserPreferredPresence / clearUserPreferredPresence with only the accepted pairs
(400 otherwise); getPresencesByUserId (at most 650 ids). Faults can be queued (429 with
Retry-After, 503) or the whole service taken down.

getPresencesByUserId answers as Graph aggregates a user's presence
(https://learn.microsoft.com/graph/api/presence-setpresence,
https://learn.microsoft.com/graph/api/presence-setuserpreferredpresence): the preferred presence
(whoever set it: the user in Teams or an application) while at least one session exists; else the
highest of the sessions, DoNotDisturb > Busy > Available > Away; no session, Offline/Offline.
Sessions are the applications' (setPresence) and the user's Teams clients (`presences`, set by the
test). An application's session expires after its expirationDuration (default PT5M), and an
Available one not set again for five minutes fades to Available/AvailableInactive, five more to
Away/Away; a preferred presence expires after its expirationDuration (default one day for
DoNotDisturb and Busy, seven for the others). Times are the process's clock, so time_machine moves
them as it moves the server's.
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
# Graph's aggregation of sessions: the highest wins.
_SESSION_RANK = {"DoNotDisturb": 4, "Busy": 3, "BusyIdle": 3, "Available": 2, "AvailableIdle": 2, "Away": 1}
_AVAILABLE_TIMEOUT = datetime.timedelta(minutes=5)


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


@dataclass
class Lifetime:
    set_at: datetime.datetime
    expires_at: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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
            self.session_lifetimes: dict[tuple[str, str], Lifetime] = {}
            self.preferred: dict[str, dict] = {}  # user → preferred presence, the user's or an app's
            self.preferred_lifetimes: dict[str, Lifetime] = {}
            self.presences: dict[str, tuple[str, str]] = {}  # user → their Teams client's session
            self.faults: deque[Fault] = deque()
            self.down = False
            self.token_requests = 0

    def register_app(self, tenant_id: str, client_id: str, secret: str) -> None:
        self.apps[(tenant_id, client_id)] = secret

    def user_sets_preferred_presence(self, user: str, availability: str, activity: str) -> None:
        """The user picks a status in Teams: their preferred presence, the one an application
        would set or clear too (no expiry: it lasts until they change it)."""
        with self.lock:
            self.preferred[user] = {"availability": availability, "activity": activity}
            self.preferred_lifetimes[user] = Lifetime(_now(), _now() + datetime.timedelta(days=3650))

    def user_resets_status(self, user: str) -> None:
        """The user's "Reset status" in Teams: no preferred presence any more."""
        with self.lock:
            self.preferred.pop(user, None)
            self.preferred_lifetimes.pop(user, None)

    def presence_of(self, user: str) -> tuple[str, str]:
        """What Teams shows for the user now (getPresencesByUserId's answer)."""
        with self.lock:
            return self._aggregate(user, _now())

    def session_shown(self, user: str, session_id: str) -> tuple[str, str] | None:
        """An application's session as Graph holds it now: faded, or None once expired."""
        with self.lock:
            return self._session_now(user, session_id, _now())

    def _session_now(self, user: str, session_id: str, now: datetime.datetime) -> tuple[str, str] | None:
        session = self.sessions.get((user, session_id))
        lifetime = self.session_lifetimes.get((user, session_id))
        if session is None or lifetime is None or now >= lifetime.expires_at:
            return None
        pair = (session["availability"], session["activity"])
        if pair[0] == "Available":
            idle = now - lifetime.set_at
            if idle >= 2 * _AVAILABLE_TIMEOUT:
                return "Away", "Away"
            if idle >= _AVAILABLE_TIMEOUT:
                return "Available", "AvailableInactive"
        return pair

    def _aggregate(self, user: str, now: datetime.datetime) -> tuple[str, str]:
        sessions = [self._session_now(u, sid, now) for (u, sid) in self.sessions if u == user]
        sessions = [pair for pair in sessions if pair is not None]
        if user in self.presences:
            sessions.append(self.presences[user])
        if not sessions:
            return "Offline", "Offline"
        lifetime = self.preferred_lifetimes.get(user)
        if user in self.preferred and lifetime is not None and now < lifetime.expires_at:
            return self.preferred[user]["availability"], self.preferred[user]["activity"]
        return max(sessions, key=lambda pair: _SESSION_RANK.get(pair[0], 0))

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
                with fake.lock:
                    now = _now()
                    value = [
                        dict(zip(("availability", "activity"), fake._aggregate(i, now), strict=True), id=i) for i in ids
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
                    now = _now()
                    fake.sessions[(user, client_id)] = {"availability": pair[0], "activity": pair[1]}
                    fake.session_lifetimes[(user, client_id)] = Lifetime(now, now + datetime.timedelta(minutes=minutes))
                    return self._reply(200)
                if action == "clearPresence":
                    session_id = body.get("sessionId")
                    live = fake._session_now(user, session_id, _now()) is not None
                    fake.sessions.pop((user, session_id), None)
                    fake.session_lifetimes.pop((user, session_id), None)
                    if not live:
                        return self._reply(404, {"error": {"code": "NotFound"}})
                    return self._reply(200)
                if action == "setUserPreferredPresence":
                    if pair not in PREFERRED_PAIRS or "sessionId" in body:
                        return self._reply(400, {"error": {"code": "BadRequest"}})
                    default = "P1D" if pair[0] in ("DoNotDisturb", "Busy") else "P7D"
                    duration = body.get("expirationDuration", default)
                    minutes = {"P1D": 24 * 60, "P7D": 7 * 24 * 60}.get(duration) or _duration_minutes(duration)
                    if minutes is None:
                        return self._reply(400, {"error": {"code": "BadRequest"}})
                    now = _now()
                    fake.preferred[user] = {"availability": pair[0], "activity": pair[1]}
                    fake.preferred_lifetimes[user] = Lifetime(now, now + datetime.timedelta(minutes=minutes))
                    return self._reply(200)
                if action == "clearUserPreferredPresence":
                    fake.preferred.pop(user, None)
                    fake.preferred_lifetimes.pop(user, None)
                    return self._reply(200)
            self._reply(404, {"error": {"code": "NotFound"}})

    return Handler
