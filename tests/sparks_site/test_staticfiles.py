"""Static files without nginx: every web process serves `/static/` from `STATIC_ROOT` (WSGI and
ASGI alike), templates link hashed names only once collectstatic wrote its manifest; and the nginx
config serve-prod renders is valid without TLS too (the production test runs it with TLS)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from deploy import serve
from sparks_site.staticfiles import StaticFilesStorage

CSS = b"body { color: #123456; }\n"


@pytest.fixture
def collected(tmp_path, settings):
    """A STATIC_ROOT holding one stylesheet, as collectstatic leaves it (the middleware reads the
    directory when a handler is built, so each test client sees this one)."""
    (tmp_path / "admin" / "css").mkdir(parents=True)
    (tmp_path / "admin" / "css" / "base.css").write_bytes(CSS)
    settings.STATIC_ROOT = tmp_path
    return tmp_path


def test_a_wsgi_web_process_serves_collected_static_files(collected):
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    assert b"".join(response.streaming_content) == CSS
    # Anything else goes on to Django.
    assert Client().get("/static/admin/css/missing.css").status_code == 404


def test_an_asgi_web_process_serves_them_and_passes_the_rest_on(collected):
    async def scenario():
        client = AsyncClient()
        static = await client.get("/static/admin/css/base.css")
        body = b"".join(static.streaming_content)  # a file: read as it is, synchronously
        api = await client.get("/api/v1/me/presence")
        return static, body, api

    static, body, api = async_to_sync(scenario)()
    assert static.status_code == 200
    assert static["Content-Type"].startswith("text/css")
    assert body == CSS
    assert api.status_code == 401  # the API's own answer: the middleware let it through


def test_templates_link_hashed_names_once_the_manifest_exists(tmp_path):
    before = StaticFilesStorage(location=tmp_path, base_url="/static/")
    assert before.url("admin/css/base.css") == "/static/admin/css/base.css"

    manifest = {"version": "1.1", "paths": {"admin/css/base.css": "admin/css/base.0123456789ab.css"}, "hash": "x"}
    (tmp_path / "staticfiles.json").write_text(json.dumps(manifest))
    after = StaticFilesStorage(location=tmp_path, base_url="/static/")
    assert after.url("admin/css/base.css") == "/static/admin/css/base.0123456789ab.css"


def test_the_plain_http_nginx_config_is_valid(tmp_path):
    nginx = os.environ.get("NGINX", "/usr/sbin/nginx")
    if not os.access(nginx, os.X_OK):
        pytest.skip(f"nginx is not installed at {nginx}")
    config = serve.render_nginx(
        tmp_path, "127.0.0.1", 8000, ["127.0.0.1:8001"], ["127.0.0.1:8002"], tmp_path / "static", env={}
    )
    text = config.read_text()
    assert "listen 127.0.0.1:8000;" in text
    assert "ssl" not in text
    checked = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(config)],
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
