"""artifact_blobs table and artifacts.blob: large artifacts kept in the database

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 09:00:00+00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifact_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_artifact_blobs")),
    )
    # A nullable column without a foreign key: added in place on SQLite too (no table rebuild).
    op.add_column("artifacts", sa.Column("blob", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_artifacts_blob"), "artifacts", ["blob"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_artifacts_blob"), table_name="artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("blob")
    op.drop_table("artifact_blobs")
