"""experiments: their specs, each debtor's arm (assigned once), the arm and any language fallback on attempts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=60), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_table(
        "experiment_assignments",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("experiment_id", sa.String(length=60), nullable=False),
        sa.Column("debtor_id", sa.String(length=200), nullable=False),
        sa.Column("arm", sa.String(length=60), nullable=False),
        sa.Column("variant", sa.String(length=60), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("detail", _JSON, nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("contact_id", sa.String(length=26), nullable=True),
        sa.Column("case_id", sa.String(length=200), nullable=True),
        sa.Column("exposed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_assignments_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_assignments")),
    )
    op.create_index(
        "uq_experiment_assignments_experiment_id_debtor_id",
        "experiment_assignments",
        ["experiment_id", "debtor_id"],
        unique=True,
    )
    op.create_index(
        "ix_experiment_assignments_experiment_id_exposed_at",
        "experiment_assignments",
        ["experiment_id", "exposed_at"],
        unique=False,
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assignment", _JSON, nullable=True))
        batch_op.add_column(sa.Column("template_fallback", sa.String(length=5), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("template_fallback")
        batch_op.drop_column("assignment")
    op.drop_index("ix_experiment_assignments_experiment_id_exposed_at", table_name="experiment_assignments")
    op.drop_index("uq_experiment_assignments_experiment_id_debtor_id", table_name="experiment_assignments")
    op.drop_table("experiment_assignments")
    op.drop_table("experiments")
