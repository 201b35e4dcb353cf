"""A fresh clone runs `manage.py` with no variable set: the settings write a development `.env`.

Each test copies the project's code into a directory of its own and runs `manage.py` there with
a bare environment (no SECRET_KEY, DEBUG, DATABASE_URL or REDIS_URL: the embedded default).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sparks_site import devenv
from sparks_site.devenv import ensure_dev_env

PROJECT_DIR = Path(__file__).resolve().parents[2]
CODE = ["manage.py", "sparks_site", "orgs", "presence", "integrations", "templates"]


@pytest.fixture
def fresh_clone(tmp_path) -> Path:
    clone = tmp_path / "clone"
    clone.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".env", "db.sqlite3*")
    for name in CODE:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=ignore)
        else:
            shutil.copy2(source, clone / name)
    return clone


def manage(clone: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    """`python manage.py ARGS` in the clone, with nothing in the environment but PATH and HOME."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(clone), **variables}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=180
    )


def secret_key_line(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("SECRET_KEY="))


def test_a_fresh_clone_runs_manage_py_as_the_readme_says(fresh_clone):
    checked = manage(fresh_clone, "check")
    assert checked.returncode == 0, checked.stderr

    dotenv = fresh_clone / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    text = dotenv.read_text()
    assert "DEBUG=true" in text.splitlines()
    assert "Production sets its own SECRET_KEY" in text
    key_line = secret_key_line(dotenv)
    assert len(key_line.removeprefix("SECRET_KEY=")) >= 50

    for args in (["migrate", "--noinput"], ["seed_demo"]):
        done = manage(fresh_clone, *args)
        assert done.returncode == 0, done.stderr
    token = manage(fresh_clone, "drf_create_token", "alice")
    assert token.returncode == 0, token.stderr
    assert "Generated token" in token.stdout

    # Every later run reads the same key: sessions and device ids survive a restart.
    shown = manage(fresh_clone, "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    assert shown.stdout.strip().splitlines()[-1] == key_line.removeprefix("SECRET_KEY=")
    assert secret_key_line(dotenv) == key_line


def test_a_secret_key_in_the_environment_writes_no_file(fresh_clone):
    checked = manage(fresh_clone, "check", SECRET_KEY="set-by-the-operator", DEBUG="0")

    assert checked.returncode == 0, checked.stderr
    assert not (fresh_clone / ".env").exists()


def test_a_process_given_its_own_key_ignores_the_generated_file(fresh_clone):
    """Not DEBUG because someone's first `manage.py` left a development `.env` in the checkout."""
    assert manage(fresh_clone, "check").returncode == 0
    show = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"

    own = manage(fresh_clone, "shell", "-c", show, SECRET_KEY="set-by-the-operator")
    generated = manage(fresh_clone, "shell", "-c", show)

    assert own.stdout.strip().splitlines()[-1] == "False set-by-the-operator"
    key = secret_key_line(fresh_clone / ".env").removeprefix("SECRET_KEY=")
    assert generated.stdout.strip().splitlines()[-1] == f"True {key}"


def test_an_operator_s_own_env_file_is_read_whatever_the_environment(tmp_path):
    own = tmp_path / ".env"
    own.write_text("SECRET_KEY=from-the-file\nDEBUG=false\n")

    assert devenv.applies(own, environ={"SECRET_KEY": "from-the-environment"})
    assert devenv.applies(tmp_path / "missing", environ={"SECRET_KEY": "from-the-environment"})


def test_debug_off_in_the_environment_without_a_key_keeps_the_clear_error(fresh_clone):
    # A production process that lost its SECRET_KEY must not run on a key of its own.
    checked = manage(fresh_clone, "check", DEBUG="0")

    assert checked.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in checked.stderr
    assert not (fresh_clone / ".env").exists()


def test_an_existing_env_file_is_never_changed(fresh_clone):
    dotenv = fresh_clone / ".env"
    dotenv.write_text("DEBUG=false\n")

    checked = manage(fresh_clone, "check")

    assert checked.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in checked.stderr
    assert dotenv.read_text() == "DEBUG=false\n"


def test_a_checkout_that_cannot_be_written_gets_no_file_and_no_crash(tmp_path):
    # A directory that is not there stands for a read-only one (the tests run as root, whom
    # permissions do not stop).
    target = tmp_path / "missing" / ".env"

    assert ensure_dev_env(target, environ={}) is False
    assert not target.exists()


def test_the_file_is_written_once_whoever_asks_again(tmp_path):
    target = tmp_path / ".env"

    assert ensure_dev_env(target, environ={}) is True
    first = target.read_text()
    assert ensure_dev_env(target, environ={}) is False
    assert target.read_text() == first
    assert [path.name for path in tmp_path.iterdir()] == [".env"]  # no draft left behind
