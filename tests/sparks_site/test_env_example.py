"""Every setting the server reads from the environment is documented in `.env.example`."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_every_environment_setting_is_in_env_example():
    source = (PROJECT_DIR / "sparks_site" / "settings.py").read_text()
    read = set(re.findall(r'env\.[a-z_]+\(\s*"([A-Z][A-Z0-9_]*)"', source))
    # And what the entry points and the metrics read of the environment themselves.
    for module in ("wsgi.py", "asgi.py", "celery.py", "metrics.py"):
        source = (PROJECT_DIR / "sparks_site" / module).read_text()
        read |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]*)"', source))
    example = (PROJECT_DIR / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))

    assert {"BEAT_LOCK_TTL_SECONDS", "READINESS_SWEEP_STALE_SECONDS", "INTEGRATIONS_SECRET_KEYS"} <= read
    assert {"SPARKS_HEARTBEAT_LANE", "PROMETHEUS_MULTIPROC_DIR"} <= read
    assert sorted(read - documented) == []
