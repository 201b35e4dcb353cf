"""A real Synapse on loopback for the Matrix tests, with SPARKS registered as an appservice."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT_DIR = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = os.environ.get("SPARKS_TEST_SYNAPSE_VENV", "/tmp/sparks-test-synapse/venv")
SYNAPSE_PIP_SPEC = "matrix-synapse==1.163.2"


def synapse_local() -> Path:
    """The synapse-local tool, from shared/ beside the project (or SYNAPSE_LOCAL)."""
    configured = os.environ.get("SYNAPSE_LOCAL")
    candidates = [Path(configured)] if configured else []
    candidates += [PROJECT_DIR.parent / "shared" / "tools" / "synapse-local", Path("/work/shared/tools/synapse-local")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("synapse-local not found: set SYNAPSE_LOCAL to its path")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class MatrixUser:
    user_id: str
    access_token: str


class Synapse:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server_name = "localhost"
        self.as_token = secrets.token_hex(16)
        self.env = {
            **os.environ,
            "SYNAPSE_VENV": SYNAPSE_VENV,
            "SYNAPSE_DIR": str(directory),
            "SYNAPSE_PORT": str(self.port),
            "SYNAPSE_PIP_SPEC": SYNAPSE_PIP_SPEC,
        }
        self.tool = synapse_local()

    def write_appservice_registration(self) -> None:
        # The registration an administrator installs (see README): SPARKS may act as any local
        # user (non-exclusive namespace), receives no events (url: null), is not rate limited.
        registration = self.directory / "sparks-presence-appservice.yaml"
        registration.write_text(
            "id: sparks-presence\n"
            "url: null\n"
            f"as_token: {self.as_token}\n"
            f"hs_token: {secrets.token_hex(16)}\n"
            "sender_localpart: sparks-presence\n"
            "rate_limited: false\n"
            "namespaces:\n"
            "  users:\n"
            "    - exclusive: false\n"
            f'      regex: "@.*:{self.server_name}"\n'
            "  aliases: []\n"
            "  rooms: []\n"
        )
        (self.directory / "override.yaml").write_text(f"app_service_config_files: [{registration}]\n")

    def _run(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(self.tool), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"synapse-local {args[0]} failed: {result.stderr[-3000:]}")
        return result.stdout

    def start(self) -> None:
        self.write_appservice_registration()
        self._run("start")

    def stop(self) -> None:
        self._run("stop", timeout=60)

    def register(self, localpart: str) -> MatrixUser:
        data = json.loads(self._run("register", localpart, secrets.token_hex(12), timeout=60))
        return MatrixUser(data["user_id"], data["access_token"])

    def call(self, user: MatrixUser, method: str, path: str, body: dict | None = None) -> dict:
        response = httpx.request(
            method,
            f"{self.base_url}{path}",
            headers={"Authorization": f"Bearer {user.access_token}"},
            json=body,
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def share_a_room(self, one: MatrixUser, other: MatrixUser) -> None:
        room = self.call(one, "POST", "/_matrix/client/v3/createRoom", {"invite": [other.user_id]})["room_id"]
        self.call(other, "POST", f"/_matrix/client/v3/join/{room}", {})

    def presence_of(self, reader: MatrixUser, user_id: str) -> dict:
        return self.call(reader, "GET", f"/_matrix/client/v3/presence/{user_id}/status")
