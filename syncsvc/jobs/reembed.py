"""Requesting a re-embed: validate the model, estimate the cost, create the job."""

from __future__ import annotations

import math
import random
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.capture.targets import check_sparse
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import Target
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting, sqlfiles, statements
from syncsvc.db.catalog import get_target
from syncsvc.embed.profiles import ModelProfile, Protocol, ProviderProfile
from syncsvc.embed.tokens import counter
from syncsvc.jobs.model import Estimate, Job, get_job
from syncsvc.providers.registry import provider_profile, publish_models

ESTIMATE_SAMPLE_ROWS = 5000
"""Dry runs count the tokens of every row up to this many, and of a sample beyond."""


def resolve_model(
    settings: Settings,
    provider: str,
    model: str,
    dimensions: int,
    options: dict[str, Any] | None = None,
) -> tuple[ModelProfile, str]:
    """The model's profile and vector space, or a ValidationError saying what is offered
    (including generation ``options`` the provider cannot honour, such as sparse output)."""
    profile = provider_profile(provider, settings)
    found = profile.model(model)
    if dimensions not in found.dimensions:
        allowed = "/".join(str(d) for d in found.dimensions)
        raise ValidationError(f"{model} does not offer {dimensions} dimensions ({allowed})")
    if options and options.get("sparse"):
        check_sparse(profile, found)
    configured = settings.providers.get(provider)
    space = (configured.space if configured else None) or found.space or profile.name
    return found, space


def _provider_of(target: Target, provider: str | None) -> str:
    if provider:
        return provider
    return target.active.provider if target.active else "local-hash"


async def request_reembed(
    conn: AsyncConn,
    settings: Settings,
    target_name: str,
    *,
    model: str,
    dimensions: int,
    provider: str | None = None,
    auto_promote: bool = False,
    max_queued: int | None = None,
    options: dict[str, Any] | None = None,
) -> Job:
    """Validate, then create the job and its building generation via ``syncsvc.request_reembed``.

    The SQL function is the one entry point (psql users call it directly), so both paths
    create exactly the same rows and the same vector table. ``options`` (None: those of the
    active generation, e.g. sparse output) shape the new vector space.
    """
    target = await get_target(conn, target_name)
    provider = _provider_of(target, provider)
    inherited = target.active.options if target.active else {}
    _, space = resolve_model(
        settings, provider, model, dimensions, inherited if options is None else options
    )
    # The SQL function checks against the published models: publish this caller's view of
    # the provider, which it has just validated against.
    await publish_models(conn, settings, only=provider)
    try:
        cur = await conn.execute(
            sqlfiles.query("jobs", "request_reembed"),
            {
                "target": target.name,
                "model": model,
                "dimensions": dimensions,
                "provider": provider,
                "auto_promote": auto_promote,
                "space": space,
                "max_queued": max_queued,
                "options": None if options is None else Jsonb(options),
            },
        )
    except (psycopg.errors.RaiseException, psycopg.errors.UniqueViolation) as exc:
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise ValidationError(f"{exc.diag.message_primary}{hint}") from None
    row = await cur.fetchone()
    assert row is not None
    return await get_job(conn, row["id"])


async def options_with_sparse(conn: AsyncConn, target_name: str, sparse: bool) -> dict[str, Any]:
    """The active generation's options with sparse output switched on or off."""
    target = await get_target(conn, target_name)
    options = dict(target.active.options) if target.active else {}
    if sparse:
        options["sparse"] = True
    else:
        options.pop("sparse", None)
    return options


async def estimate(
    conn: AsyncConn,
    settings: Settings,
    target_name: str,
    *,
    model: str,
    dimensions: int,
    provider: str | None = None,
) -> Estimate:
    """Rows, tokens and cost of re-embedding a target; reads the source, spends nothing."""
    target = await get_target(conn, target_name)
    provider = _provider_of(target, provider)
    found, _ = resolve_model(settings, provider, model, dimensions)
    tokenizer = counter(provider_profile(provider, settings).tokenizer)
    text = statements.input_expr(target, "s")
    cur = await conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {} s WHERE {}").format(
            statements.source(target), statements.has_text(target, "s")
        )
    )
    row = await cur.fetchone()
    rows = int(row["n"]) if row else 0
    sampled = rows > ESTIMATE_SAMPLE_ROWS
    sample: sql.Composable = sql.SQL("")
    if sampled:
        # BERNOULLI reads every page but returns a fair sample: tokens scale linearly.
        percent = min(100.0, 100.0 * ESTIMATE_SAMPLE_ROWS * 1.2 / rows)
        sample = sql.SQL("TABLESAMPLE BERNOULLI ({}) REPEATABLE ({})").format(
            quoting.literal(percent), quoting.literal(random.randint(1, 1_000_000))
        )
    cur = await conn.execute(
        sql.SQL("SELECT {} AS input FROM {} s {} WHERE {}").format(
            text, statements.source(target), sample, statements.has_text(target, "s")
        )
    )
    counted = [tokenizer.count(r["input"]) for r in await cur.fetchall()]
    tokens = sum(counted)
    if sampled and counted:
        tokens = round(tokens / len(counted) * rows)
    return Estimate(
        target=target.name,
        provider=provider,
        model=model,
        dimensions=dimensions,
        rows=rows,
        tokens=tokens,
        price_per_million_tokens=found.price_per_million_tokens,
        sampled=sampled,
        seconds=embedding_seconds(provider_profile(provider, settings), rows, tokens),
    )


ASSUMED_LATENCY = 0.2
"""Seconds per embedding request assumed by estimates (DashScope's typical round trip)."""


def embedding_seconds(profile: ProviderProfile, rows: int, tokens: int) -> float:
    """Time to embed ``rows`` (``tokens`` in all) through ``profile``: its concurrency at
    ``ASSUMED_LATENCY``, or its rpm/tpm budget if that is the tighter bound."""
    if rows == 0 or profile.protocol is Protocol.LOCAL:
        return 0.0
    requests = math.ceil(rows / profile.max_inputs_per_request)
    seconds = requests * ASSUMED_LATENCY / max(1, profile.concurrency)
    if profile.rpm:
        seconds = max(seconds, requests * 60.0 / profile.rpm)
    if profile.tpm:
        seconds = max(seconds, tokens * 60.0 / profile.tpm)
    return seconds
