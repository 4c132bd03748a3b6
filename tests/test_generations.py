"""Generation identity: the vector space decides, not the host that serves the model."""

from __future__ import annotations

from syncsvc.capture import targets
from syncsvc.core.settings import ProviderSettings, Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import load_targets
from tests.test_sync import make_articles


def _spec(name: str, provider: str, model: str, dims: int = 1024) -> targets.TargetSpec:
    return targets.TargetSpec(
        name=name,
        table="articles",
        columns=("body",),
        provider=provider,
        model=model,
        dimensions=dims,
    )


async def test_declared_gateway_space_shares_the_generation_key(conn: AsyncConn) -> None:
    await make_articles(conn)
    settings = Settings(
        providers={
            "ds": ProviderSettings(profile="dashscope-intl"),
            "gw_same": ProviderSettings(profile="aimlapi", space="dashscope/text-embedding-v4"),
            "gw_own": ProviderSettings(profile="aimlapi"),
        }
    )
    await targets.add_target(conn, settings, _spec("direct", "ds", "text-embedding-v4"))
    await targets.add_target(
        conn, settings, _spec("declared", "gw_same", "alibaba/qwen-text-embedding-v4")
    )
    await targets.add_target(
        conn, settings, _spec("undeclared", "gw_own", "alibaba/qwen-text-embedding-v4")
    )
    await targets.add_target(conn, settings, _spec("smaller", "ds", "text-embedding-v4", 512))
    keys = {t.name: t.generations[0].key for t in await load_targets(conn)}
    assert keys["declared"] == keys["direct"]
    assert keys["undeclared"] != keys["direct"]
    assert keys["smaller"] != keys["direct"]
