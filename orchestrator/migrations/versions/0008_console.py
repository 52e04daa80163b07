"""the operator console: operators, sessions, saved searches, the access log; debtors get an opaque ref for
URLs and indexed search terms; contact indexes for the console's filters; operator tasks get a resolution

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 03:00:00
"""

import os
import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid() -> str:
    # a copy of models.new_id: a migration must not change when the application code does
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def upgrade() -> None:
    with op.batch_alter_table("debtors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ref", sa.String(length=26), nullable=True))
    debtors = sa.table("debtors", sa.column("id", sa.String), sa.column("ref", sa.String))
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.select(debtors.c.id))]
    for debtor_id in ids:
        conn.execute(debtors.update().where(debtors.c.id == debtor_id).values(ref=_ulid()))
    with op.batch_alter_table("debtors", schema=None) as batch_op:
        batch_op.alter_column("ref", existing_type=sa.String(length=26), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_debtors_ref"), ["ref"])

    op.create_table(
        "debtor_search_terms",
        sa.Column(
            "term",
            sa.String(length=330).with_variant(sa.String(length=330, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("debtor_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("term", "debtor_id", name=op.f("pk_debtor_search_terms")),
    )
    op.create_index(
        op.f("ix_debtor_search_terms_debtor_id"), "debtor_search_terms", ["debtor_id"], unique=False
    )
    op.create_table(
        "operators",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("username", name=op.f("uq_operators_username")),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("operator_id", sa.String(length=26), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_console_sessions_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    op.create_index(
        op.f("ix_console_sessions_operator_id"), "console_sessions", ["operator_id"], unique=False
    )
    op.create_table(
        "console_searches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=26), nullable=False),
        sa.Column("criteria", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_searches")),
    )
    op.create_index(op.f("ix_console_searches_created_at"), "console_searches", ["created_at"], unique=False)
    op.create_table(
        "console_audit",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("operator_id", sa.String(length=26), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("debtor_id", sa.String(length=200), nullable=True),
        sa.Column("detail", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_audit")),
    )
    op.create_index(op.f("ix_console_audit_operator_id"), "console_audit", ["operator_id"], unique=False)
    op.create_index("ix_contacts_status_id", "contacts", ["status", "id"], unique=False)
    op.create_index("ix_contacts_kind_id", "contacts", ["kind", "id"], unique=False)
    op.create_index("ix_contacts_channel_id", "contacts", ["channel", "id"], unique=False)
    with op.batch_alter_table("operator_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolution", _JSON, nullable=True))
    op.create_index("ix_operator_tasks_resolved_at_id", "operator_tasks", ["resolved_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_operator_tasks_resolved_at_id", table_name="operator_tasks")
    with op.batch_alter_table("operator_tasks", schema=None) as batch_op:
        batch_op.drop_column("resolution")
    op.drop_index("ix_contacts_channel_id", table_name="contacts")
    op.drop_index("ix_contacts_kind_id", table_name="contacts")
    op.drop_index("ix_contacts_status_id", table_name="contacts")
    op.drop_index(op.f("ix_console_audit_operator_id"), table_name="console_audit")
    op.drop_table("console_audit")
    op.drop_index(op.f("ix_console_searches_created_at"), table_name="console_searches")
    op.drop_table("console_searches")
    op.drop_index(op.f("ix_console_sessions_operator_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("operators")
    op.drop_index(op.f("ix_debtor_search_terms_debtor_id"), table_name="debtor_search_terms")
    op.drop_table("debtor_search_terms")
    with op.batch_alter_table("debtors", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_debtors_ref"), type_="unique")
        batch_op.drop_column("ref")
