"""code_archives table; deployments.code_archive and deployments.environment (snapshots)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 07:20:00+00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "code_archives",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_code_archives")),
    )
    # Batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("code_archive", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("environment", sa.JSON(none_as_null=True), nullable=True))
        batch.create_index(batch.f("ix_deployments_code_archive"), ["code_archive"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_deployments_code_archive_code_archives"),
            "code_archives",
            ["code_archive"],
            ["hash"],
        )


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint(
            batch.f("fk_deployments_code_archive_code_archives"), type_="foreignkey"
        )
        batch.drop_index(batch.f("ix_deployments_code_archive"))
        batch.drop_column("environment")
        batch.drop_column("code_archive")
    op.drop_table("code_archives")
