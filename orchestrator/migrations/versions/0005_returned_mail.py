"""the returned-mail loop: operator tasks, returned letters claimed once, registry addresses on debtors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "operator_tasks",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("debtor_id", sa.String(length=200), nullable=False),
        sa.Column("case_id", sa.String(length=200), nullable=True),
        sa.Column("contact_id", sa.String(length=26), nullable=True),
        sa.Column("attempt_id", sa.String(length=26), nullable=True),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_tasks")),
    )
    op.create_index(op.f("ix_operator_tasks_debtor_id"), "operator_tasks", ["debtor_id"], unique=False)
    op.create_table(
        "returned_letters",
        sa.Column("attempt_id", sa.String(length=26), nullable=False),
        sa.Column("contact_id", sa.String(length=26), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_returned_letters")),
    )
    with op.batch_alter_table("debtors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registry_addresses", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("debtors", schema=None) as batch_op:
        batch_op.drop_column("registry_addresses")
    op.drop_table("returned_letters")
    op.drop_index(op.f("ix_operator_tasks_debtor_id"), table_name="operator_tasks")
    op.drop_table("operator_tasks")
