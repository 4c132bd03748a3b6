"""SQL names and text literals that are safe in any statement syncsvc composes.

``psycopg.sql.Identifier`` and ``sql.Literal`` quote correctly, but leave ``%`` as it is: in a
statement executed with parameters a table called ``100%`` or a template literal ``100% off``
then reads as a broken placeholder, and a ``$`` can end a dollar-quoted function body early.
Names and text holding either character are written with escapes instead (``U&"…\\0025…"``,
``E'…\\x25…'``), which mean the same to PostgreSQL and contain neither; anything else is left
to psycopg. Every statement syncsvc composes from a user's names or text uses these.
"""

from __future__ import annotations

import re

from psycopg import sql

_SPECIAL = ("%", "$")


def _special(text: str) -> bool:
    return any(ch in text for ch in _SPECIAL)


def ident(*names: str) -> sql.Composable:
    """A (qualified) identifier, like ``sql.Identifier(*names)``."""
    if not any(_special(n) for n in names):
        return sql.Identifier(*names)
    return sql.SQL(".").join(sql.SQL(_unicode_ident(n)) for n in names)


def _unicode_ident(name: str) -> str:
    escaped = (
        name.replace("\\", "\\\\").replace('"', '""').replace("%", "\\0025").replace("$", "\\0024")
    )
    return f'U&"{escaped}"'


def literal(value: object) -> sql.Composable:
    """A constant, like ``sql.Literal(value)``; a list of strings becomes a ``text[]``."""
    if isinstance(value, str) and _special(value):
        escaped = (
            value.replace("\\", "\\\\")
            .replace("'", "''")
            .replace("%", "\\x25")
            .replace("$", "\\x24")
        )
        return sql.SQL(f"E'{escaped}'")
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(literal(v) for v in value))
    return sql.Literal(value)


_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def type_name(formatted: str) -> sql.Composable:
    """A type as ``format_type`` wrote it (``integer``, ``public."my%type"``): its quoted names
    escaped like identifiers (only they can hold a ``%``)."""
    if not _special(formatted):
        return sql.SQL(formatted)
    return sql.SQL(
        _QUOTED.sub(lambda m: _unicode_ident(m.group(0)[1:-1].replace('""', '"')), formatted)
    )
