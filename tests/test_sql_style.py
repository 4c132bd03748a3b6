"""One way to write SQL (issue 23): fixed statements are named queries in ``sql/*.sql``.

``psycopg.sql`` composition stays where identifiers vary; every placeholder is named
(``%(x)s``). This test fails on a new inline fixed SQL literal passed to ``execute`` /
``executemany`` / ``sql.SQL`` in ``syncsvc/``, and on a positional ``%s`` placeholder in
``sql/*.sql`` or in any such literal.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "syncsvc"
SQL_DIR = ROOT / "sql"

STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|GRANT|REVOKE|"
    r"COMMENT|LOCK|DO|SET|RESET|NOTIFY|LISTEN|UNLISTEN|ANALYZE|VACUUM|REINDEX|CALL|COPY|"
    r"BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|DECLARE|FETCH|MOVE|CLOSE|DISCARD|SECURITY)\b",
    re.IGNORECASE,
)
POSITIONAL = re.compile(r"(?<!%)%s")
CALLS = {"execute", "executemany", "SQL"}

ALLOWED: dict[tuple[str, str], str] = {}
"""(module path, first 40 characters of the literal) -> why it stays inline. Empty: every
fixed statement syncsvc issues is a named query."""

POSITIONAL_ALLOWED: dict[tuple[str, str], str] = {
    ("integrations/common.py", "{} = %s"): (
        "a framework filter is joined with the caller's free `where`, whose public `params` "
        "are a list (positional); psycopg cannot mix the two styles in one statement"
    ),
}


def _text(node: ast.expr) -> str | None:
    """The text of a str constant, or of an f-string's constant parts."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
    return None


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _has_fields(text: str) -> bool:
    """Whether a ``sql.SQL`` template has ``{}`` fields (identifiers are composed into it)."""
    return bool(re.search(r"(?<!\{)\{[^{}]*\}(?!\})", text))


def sql_literals() -> Iterator[tuple[str, int, str, bool, bool]]:
    """(module, line, text, statement, composed) of every literal passed to execute,
    executemany or sql.SQL: ``statement`` when it starts like one, ``composed`` for a
    ``sql.SQL`` template with ``{}`` fields (identifiers vary)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("migrations", "sql"):
            continue  # symlinks to the alembic tree and the SQL files
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = _call_name(node)
            if name not in CALLS:
                continue
            text = _text(node.args[0])
            if text is None:
                continue
            composed = name == "SQL" and _has_fields(text)
            yield str(relative), node.lineno, text, bool(STATEMENT.match(text)), composed


def inline_sql() -> Iterator[tuple[str, int, str]]:
    """Fixed SQL literals: the ones that belong in a named query."""
    for module, line, text, statement, composed in sql_literals():
        if statement and not composed:
            yield module, line, text


def positional_literals() -> Iterator[tuple[str, int, str]]:
    """SQL literals and fragments, fixed or composed, that use ``%s``."""
    for module, line, text, _, _ in sql_literals():
        if POSITIONAL.search(text):
            yield module, line, text


def _key(module: str, text: str) -> tuple[str, str]:
    return module, " ".join(text.split())[:40]


def test_no_inline_fixed_sql() -> None:
    found = [
        f"{module}:{line}: {' '.join(text.split())[:70]!r}"
        for module, line, text in inline_sql()
        if _key(module, text) not in ALLOWED
    ]
    assert not found, "fixed SQL belongs in a named query (sql/*.sql):\n" + "\n".join(found)


def test_allow_list_is_current() -> None:
    seen = {_key(module, text) for module, _, text in inline_sql()}
    stale = sorted(set(ALLOWED) - seen)
    seen = {_key(module, text) for module, _, text in positional_literals()}
    stale += sorted(set(POSITIONAL_ALLOWED) - seen)
    assert not stale, f"allow-listed literals no longer in the code: {stale}"


def test_named_placeholders_only() -> None:
    found = [
        f"{module}:{line}"
        for module, line, text in positional_literals()
        if _key(module, text) not in POSITIONAL_ALLOWED
    ]
    # Only the named queries: sql/schema/ holds PL/pgSQL, where %s is format()'s, not psycopg's.
    for path in sorted(SQL_DIR.glob("*.sql")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("--", 1)[0]
            if POSITIONAL.search(code):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    assert not found, "use named placeholders %(x)s, not %s:\n" + "\n".join(found)


def test_the_checks_catch_what_they_name() -> None:
    assert STATEMENT.match("  select 1") and not STATEMENT.match("selection")
    assert POSITIONAL.search("a = %s") and not POSITIONAL.search("format('%%s')")
    assert _has_fields("DROP TABLE {}") and not _has_fields("SELECT '{{}}'")
