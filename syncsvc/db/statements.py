"""Per-target SQL, composed from identifiers so user names can never inject SQL.

Everything that depends on a target's table, key and template is built here and nowhere else:
the embedding-input expression, key matching between the queue's JSON keys and real columns,
and the capture trigger function.
"""

from __future__ import annotations

from psycopg import sql

from syncsvc.core.errors import TargetDefinitionError
from syncsvc.core.models import Generation, Target
from syncsvc.db import quoting

QUEUE_CHANNEL = "syncsvc_wakeup"
# target add/remove: the payload is the target id, so a daemon sweeps a new target at once.
TARGETS_CHANNEL = "syncsvc_targets"


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """``(literal, field)`` pairs of a template: text with ``{column}`` fields.

    As in ``str.format``, ``{{`` and ``}}`` stand for literal braces. A column whose name holds
    a brace or starts with a double quote is written quoted, as in SQL: ``{"a{b"}`` (a ``"``
    inside doubled). Anything else in a field is the column's name: no specs, no conversions.
    """
    parts: list[tuple[str, str | None]] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "}":
            if template[i + 1 : i + 2] != "}":
                raise ValueError("single '}' in template (write '}}' for a literal brace)")
            literal.append("}")
            i += 2
        elif ch == "{" and template[i + 1 : i + 2] == "{":
            literal.append("{")
            i += 2
        elif ch == "{":
            field, i = _field(template, i + 1)
            parts.append(("".join(literal), field))
            literal = []
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append(("".join(literal), None))
    return parts


def _field(template: str, i: int) -> tuple[str, int]:
    """The field name starting at ``i`` and the position after its closing brace."""
    if template[i : i + 1] == '"':
        name: list[str] = []
        i += 1
        while i < len(template):
            if template[i] == '"':
                if template[i + 1 : i + 2] == '"':
                    name.append('"')
                    i += 2
                    continue
                if template[i + 1 : i + 2] != "}":
                    raise ValueError('a quoted template field must end with "}')
                return "".join(name), i + 2
            name.append(template[i])
            i += 1
        raise ValueError('quoted template field not closed (write "" for a quote inside)')
    end = template.find("}", i)
    if end < 0:
        raise ValueError("template field not closed: '{' without '}' (write '{{' for a brace)")
    field = template[i:end]
    if not field:
        raise ValueError("empty template field {} (name a column, e.g. {title})")
    if "{" in field:
        raise ValueError(
            "'{' in a template field: write '{{' for a literal brace, or quote a column "
            'name holding braces: {"a{b"}'
        )
    return field, end + 1


def template_fields(template: str) -> list[str]:
    return [f for _, f in template_parts(template) if f is not None]


def template_field(column: str) -> str:
    """``column`` as a template field (quoted when its name needs it)."""
    if "{" in column or "}" in column or column.startswith('"'):
        return '{"' + column.replace('"', '""') + '"}'
    return "{" + column + "}"


def default_template(columns: list[str]) -> str:
    return "\n\n".join(template_field(c) for c in columns)


def source(target: Target) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        quoting.ident(target.source_schema), quoting.ident(target.source_table)
    )


def input_expr(target: Target, alias: str) -> sql.Composed:
    """The exact embedding input of a row, as SQL (NULL columns render as empty)."""
    args: list[sql.Composable] = []
    try:
        parts = template_parts(target.template)
    except ValueError as exc:
        # Stored templates were checked when added; one edited in the catalog since was not.
        raise TargetDefinitionError(
            f"template of target {target.name} is invalid: {exc} (fix it with 'syncsvc target "
            f"repair {target.name} --template ...')"
        ) from None
    for literal, field in parts:
        if literal:
            args.append(quoting.literal(literal))
        if field is not None:
            args.append(sql.SQL("{}::text").format(quoting.ident(alias, field)))
    if not args:
        args.append(quoting.literal(""))
    return sql.SQL("concat({})").format(sql.SQL(", ").join(args))


def has_text(target: Target, alias: str) -> sql.Composed:
    """Whether a row has anything to embed: its embedded columns (never the template's
    literals) hold some visible character. ``syncsvc.has_text`` is the one definition.

    A target with ``embed_labels`` embeds any row whose rendered text is not empty, labels
    alone included."""
    if target.embed_labels:
        return sql.SQL("syncsvc.has_text({})").format(input_expr(target, alias))
    fields = sql.SQL(", ").join(
        sql.SQL("{}::text").format(quoting.ident(alias, c)) for c in target.columns
    )
    return sql.SQL("syncsvc.has_text(concat({}))").format(fields)


def pk_columns(target: Target, alias: str) -> sql.Composed:
    return sql.SQL(", ").join(quoting.ident(alias, c) for c in target.pk_columns)


def pk_json(target: Target, alias: str) -> sql.Composed:
    """A row's key as the JSON array the queue stores."""
    return sql.SQL("jsonb_build_array({})").format(pk_columns(target, alias))


def pk_from_json(target: Target, json_ref: sql.Composable) -> sql.Composed:
    """Typed key columns extracted from a queue JSON key (``json_ref`` is a jsonb expression)."""
    return sql.SQL(", ").join(
        sql.SQL("({} ->> {})::{}").format(json_ref, quoting.literal(i), quoting.type_name(pk_type))
        for i, pk_type in enumerate(target.pk_types)
    )


def pk_equals(target: Target, left: str, right: str) -> sql.Composed:
    return sql.SQL("({}) = ({})").format(pk_columns(target, left), pk_columns(target, right))


def pk_matches_json(target: Target, alias: str, json_ref: sql.Composable) -> sql.Composed:
    return sql.SQL("({}) = ({})").format(pk_columns(target, alias), pk_from_json(target, json_ref))


def vector_table(generation: Generation) -> sql.Composed:
    return sql.SQL("syncsvc.{}").format(quoting.ident(generation.table_name))


def capture_function_name(target: Target) -> sql.Composed:
    return sql.SQL("syncsvc.{}").format(quoting.ident(f"capture_{target.id}"))


def trigger_name(target: Target, event: str) -> sql.Composable:
    return quoting.ident(f"syncsvc_{target.id}_{event}")


def capture_function(target: Target) -> sql.Composed:
    """The statement-level capture trigger function of a target.

    It compares OLD and NEW transition rows itself, because PostgreSQL forbids column lists on
    triggers with transition tables: only rows whose embedded columns really changed enqueue.
    The keys of one statement become one inbox row, which keeps bulk writes cheap. Any error
    (the table's shape drifted) is logged to ``syncsvc.capture_errors`` instead of raised.
    """
    old_cols = sql.SQL(", ").join(quoting.ident("o", c) for c in target.columns)
    new_cols = sql.SQL(", ").join(quoting.ident("n", c) for c in target.columns)
    enqueue = sql.SQL(
        """
        INSERT INTO syncsvc.inbox (target_id, pks)
        SELECT {tid}, jsonb_agg(k.pk) FROM ({keys}) AS k(pk)
        HAVING count(*) > 0"""
    )
    inserted = sql.SQL("SELECT {} FROM new_rows n").format(pk_json(target, "n"))
    deleted = sql.SQL("SELECT {} FROM old_rows o").format(pk_json(target, "o"))
    updated = sql.SQL(
        """SELECT {n_pk} FROM new_rows n LEFT JOIN old_rows o ON {match}
           WHERE o.{first} IS NULL OR ({old_cols}) IS DISTINCT FROM ({new_cols})
           UNION ALL
           SELECT {o_pk} FROM old_rows o
           WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE {match})"""
    ).format(
        n_pk=pk_json(target, "n"),
        o_pk=pk_json(target, "o"),
        match=pk_equals(target, "o", "n"),
        first=quoting.ident(target.pk_columns[0]),
        old_cols=old_cols,
        new_cols=new_cols,
    )
    tid = quoting.literal(target.id)
    return sql.SQL(
        """
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {ins};
        ELSIF TG_OP = 'UPDATE' THEN
            {upd};
        ELSE
            {dele};
        END IF;
        IF FOUND THEN
            PERFORM pg_notify({channel}, {tid_text});
        END IF;
    EXCEPTION WHEN OTHERS THEN
        -- The table no longer has the shape this function was built for (a column renamed or
        -- dropped): the application's statement must still succeed. The daemon pauses the
        -- target with this error; 'syncsvc target repair' rebuilds capture and sweeps.
        INSERT INTO syncsvc.capture_errors (target_id, operation, error)
        VALUES ({tid}, TG_OP, SQLERRM);
        PERFORM pg_notify({targets_channel}, {tid_text});
    END;
    RETURN NULL;
END
$fn$"""
    ).format(
        name=capture_function_name(target),
        ins=enqueue.format(tid=tid, keys=inserted),
        upd=enqueue.format(tid=tid, keys=updated),
        dele=enqueue.format(tid=tid, keys=deleted),
        channel=quoting.literal(QUEUE_CHANNEL),
        targets_channel=quoting.literal(TARGETS_CHANNEL),
        tid=tid,
        tid_text=quoting.literal(str(target.id)),
    )


def lock_capture_function(target: Target) -> sql.Composed:
    """Only the owner may attach the definer function: nobody can aim it at another table.

    Triggers fire regardless of the writing role's EXECUTE right, so the application is still
    captured; CREATE OR REPLACE keeps this ACL.
    """
    return sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(capture_function_name(target))


def create_triggers(target: Target, relation: sql.Composable | None = None) -> list[sql.Composed]:
    """The capture triggers, on the target's table or on one of its partitions (``relation``):
    a statement trigger fires only for the table the statement names."""
    src = relation if relation is not None else source(target)
    fn = capture_function_name(target)
    return [
        sql.SQL(
            "CREATE TRIGGER {} AFTER INSERT ON {} REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(trigger_name(target, "ins"), src, fn),
        sql.SQL(
            "CREATE TRIGGER {} AFTER UPDATE ON {} REFERENCING OLD TABLE AS old_rows "
            "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(trigger_name(target, "upd"), src, fn),
        sql.SQL(
            "CREATE TRIGGER {} AFTER DELETE ON {} REFERENCING OLD TABLE AS old_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(trigger_name(target, "del"), src, fn),
        sql.SQL(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION syncsvc.on_truncate({})"
        ).format(trigger_name(target, "trunc"), src, quoting.literal(str(target.id))),
    ]


def drop_relation_triggers(target: Target, relation: sql.Composable) -> list[sql.Composed]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger_name(target, event), relation)
        for event in ("ins", "upd", "del", "trunc")
    ]


def drop_triggers(target: Target) -> list[sql.Composed]:
    statements = drop_relation_triggers(target, source(target))
    statements.append(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(capture_function_name(target)))
    return statements
