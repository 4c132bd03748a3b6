"""Operations: the shared API rate budget and the daemon registry.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = ("ops",)
depends_on = None

UPGRADE = r"""
-- One row per API account (base URL + key fingerprint). Daemons reserve request and token slots
-- here (GCRA: a "theoretical arrival time" pushed forward by each reservation), so N daemons
-- together stay under the account's per-minute caps.
CREATE TABLE syncsvc.rate_budget (
    account     text PRIMARY KEY,
    request_tat timestamptz NOT NULL DEFAULT clock_timestamp(),
    token_tat   timestamptz NOT NULL DEFAULT clock_timestamp(),
    rpm         integer,
    tpm         integer,
    reserved    bigint NOT NULL DEFAULT 0,
    throttled   bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every running daemon's heartbeat: the admin page lists them, operators see which one leads.
CREATE TABLE syncsvc.daemons (
    id         text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    leader     boolean NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = r"""
DROP TABLE syncsvc.daemons;
DROP TABLE syncsvc.rate_budget;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
