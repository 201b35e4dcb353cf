"""A development `.env` for a fresh clone, so that `make run` and every `manage.py` command work
without the reader setting anything.

When neither the environment nor a `.env` beside manage.py provides `SECRET_KEY`, the settings
write one (mode 0600, gitignored) with a generated key and `DEBUG=true`, then read it as any
`.env`. Never when the environment says `DEBUG` is off: a production process that lacks its
`SECRET_KEY` must fail loudly, not run on a key of its own (device ids and sessions derive from
it, and each node would pick another). Nor is the generated file read by a process whose
environment sets SECRET_KEY (`applies`). An existing `.env` is the operator's and is never
changed. A checkout that cannot be written to keeps the settings' clear error.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

_FALSE = {"0", "false", "no", "off", ""}

MARK = "# Written by SPARKS Presence on its first start"
TEMPLATE = f"""\
{MARK}, because neither the environment nor this file
# set SECRET_KEY: a generated key for DEVELOPMENT on this machine only (gitignored, mode 0600).
# Production sets its own SECRET_KEY (and DEBUG=0) in the environment, which always wins: while
# the environment sets SECRET_KEY, this file is not read at all (nor its DEBUG=true). Delete it
# to get a new key; see .env.example for every other setting.
SECRET_KEY={{key}}
DEBUG=true
"""


def ensure_dev_env(path: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """Write the development `.env` at `path` if it is needed and possible; True if written.

    The file appears whole or not at all (written beside it, then hard-linked into place, which
    fails if another process made it first), so two processes starting together agree on a key."""
    if environ.get("SECRET_KEY"):
        return False
    if "DEBUG" in environ and environ["DEBUG"].strip().lower() in _FALSE:
        return False
    if path.exists() or path.is_symlink():
        return False
    try:
        descriptor, draft = tempfile.mkstemp(prefix=".env.", dir=path.parent)
    except OSError:
        return False  # a read-only checkout: the settings say what to set
    try:
        with os.fdopen(descriptor, "w") as file:  # mkstemp made it 0600: the key is nobody else's
            file.write(TEMPLATE.format(key=secrets.token_urlsafe(50)))
        os.link(draft, path)
    except OSError:  # FileExistsError: another process wrote it first, and its key is read
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(draft)
    return True


def applies(path: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the settings read `.env`: always an operator's own; the generated development file
    only while the environment sets no SECRET_KEY. A process given a key of its own is no
    development process, and must not be put in DEBUG by a file someone's first `manage.py`
    left in the checkout."""
    if not environ.get("SECRET_KEY"):
        return True
    try:
        with path.open() as file:
            return not file.readline().startswith(MARK)
    except OSError:
        return True  # none there: reading it is a no-op
