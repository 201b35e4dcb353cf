"""The Redis store's Lua scripts, read from `lua/*.lua` and rendered with the layout's names.

A script names a field of the hash as `'{{FIELD_VERSION}}'`, a key of a stored JSON value as
`['{{STATE_NETWORK}}']`: the placeholders are filled from `layout.LUA_NAMES`, so the scripts
and the Python code read one definition of the layout. `{{RATE_LIMIT_FUNCTIONS}}` stands for the
rate limits' Lua functions (`presence.ratelimits.CHARGE_LUA`). A placeholder without a value is
an error when the script is loaded, not a script that looks for a field nobody writes.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from presence import ratelimits
from presence.hot.layout import LUA_NAMES

LUA_DIR = Path(__file__).resolve().parent / "lua"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# What may stand inside a Lua string literal unquoted.
_PLAIN = re.compile(r"[A-Za-z0-9_:.-]+")


def names() -> list[str]:
    """Every script in `lua/`, by name."""
    return sorted(path.stem for path in LUA_DIR.glob("*.lua"))


def values() -> dict[str, str]:
    """Every placeholder's value."""
    for name, value in LUA_NAMES.items():
        if not _PLAIN.fullmatch(value):
            raise ValueError(f"the layout's {name} = {value!r} cannot stand inside a Lua string")
    return {**LUA_NAMES, "RATE_LIMIT_FUNCTIONS": ratelimits.CHARGE_LUA}


def render(template: str, names: dict[str, str]) -> str:
    """`template` with every `{{NAME}}` replaced by its value; raises `KeyError` for one without."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            raise KeyError(f"no value for the placeholder {{{{{name}}}}}")
        return names[name]

    return PLACEHOLDER.sub(fill, template)


def template(name: str) -> str:
    """The script as written in `lua/<name>.lua`."""
    return (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


@cache
def lua_source(name: str) -> str:
    """The script `name`, ready to run (read and rendered once per process)."""
    return render(template(name), values())
