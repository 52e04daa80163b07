"""The SQL of the console's search of the contact log.

Every search is ``contacts JOIN debtors`` with the filters an operator chose, newest first
(``ORDER BY contacts.id DESC``: ids are ULIDs, so that is creation order), one page at a time by keyset
(``contacts.id < <last id seen>``). Each filter has an index that answers it together with that order:

- debtor id, case id, status, kind, channel: ``(column, id)`` indexes on ``contacts``;
- a date range: a range on the primary key (a ULID's first 48 bits are its millisecond), with the exact
  ``created_at`` condition beside it, so the index narrows and ``created_at`` decides;
- name words, phone, e-mail: ``debtor_id IN (<the debtors that have every term>)``, each term a range (or an
  equality) on the primary key ``(term, debtor_id)`` of ``debtor_search_terms``, then ``(debtor_id, id)`` on
  ``contacts``.

The page of contacts is chosen first and the debtors' names are joined to those rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable, UnaryExpression
from sqlalchemy.sql.operators import custom_op

from orchestrator import search_terms
from orchestrator.models import Contact, Debtor, DebtorSearchTerm, ulid_floor

# How far a contact's id may be from its ``created_at``: intake reads the clock once per request and makes
# the ids afterwards (a batch of 10,000 takes seconds), so an id may be later than its ``created_at``. The id
# range is widened by this much and the exact ``created_at`` condition decides; the index still narrows to
# the days asked for.
ID_SLACK = timedelta(hours=1)
_SEARCHED_TABLES = ("contacts", "debtors", "debtor_search_terms")


@dataclass(frozen=True)
class SearchFilter:
    """What a search looks for; ``None`` or empty means "any"."""

    debtor_id: str | None = None
    case_id: str | None = None
    status: str | None = None
    channel: str | None = None
    kind: str | None = None
    created_from: datetime | None = None  # inclusive, aware
    created_before: datetime | None = None  # exclusive, aware
    # the debtor must have a search term starting with each of these (name words, part of an e-mail) ...
    term_prefixes: tuple[str, ...] = ()
    # ... and exactly each of these (a phone, a whole e-mail address)
    exact_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    """One row of a search's results."""

    contact_id: str
    created_at: datetime
    updated_at: datetime
    send_at: datetime | None
    debtor_id: str
    debtor_ref: str
    debtor_name: str
    case_id: str
    kind: str
    channel: str | None
    channel_preference: str
    status: str
    status_reason: str | None


_CONTACT_COLUMNS = (
    Contact.id,
    Contact.created_at,
    Contact.updated_at,
    Contact.send_at,
    Contact.debtor_id,
    Contact.case_id,
    Contact.kind,
    Contact.channel,
    Contact.channel_preference,
    Contact.status,
    Contact.status_reason,
)


def _debtors_with_all(f: SearchFilter) -> Select[str]:
    """The debtors that have every term asked for: one alias of ``debtor_search_terms`` per term, joined on
    the debtor. One set, not one ``IN`` per term, so that the planner sees how few debtors remain (PostgreSQL
    then reads their contacts by ``(debtor_id, id)`` instead of walking all contacts)."""
    ranges = [search_terms.prefix_range(p) for p in f.term_prefixes] + [(t, None) for t in f.exact_terms]
    terms = [aliased(DebtorSearchTerm) for _ in ranges]
    query = select(terms[0].debtor_id)
    for other in terms[1:]:
        query = query.join(other, other.debtor_id == terms[0].debtor_id)
    return query.where(
        *(
            term.term == lo if hi is None else and_(term.term >= lo, term.term < hi)
            for term, (lo, hi) in zip(terms, ranges, strict=True)
        )
    )


def _not_indexed(column: ColumnElement[str]) -> ColumnElement[str]:
    """``+column``: SQLite's documented way to keep a term from choosing an index."""
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


def conditions(
    f: SearchFilter, *, before_id: str | None = None, dialect: str = "postgresql"
) -> list[ColumnElement[bool]]:
    who = f.debtor_id is not None or f.case_id is not None or bool(f.term_prefixes or f.exact_terms)
    out: list[ColumnElement[bool]] = []
    if f.debtor_id is not None:
        out.append(Contact.debtor_id == f.debtor_id)
    if f.case_id is not None:
        out.append(Contact.case_id == f.case_id)
    for name, value in (("status", f.status), ("channel", f.channel), ("kind", f.kind)):
        if value is not None:
            column: ColumnElement[str] = getattr(Contact, name)
            # With a debtor to look for, the debtor's contacts are few and the (status|channel|kind, id) index
            # would walk thousands of rows to find them. PostgreSQL knows that from its statistics; SQLite,
            # without ANALYZE (a fresh embedded database has none), takes the first equality it sees, so it is
            # told.
            out.append((_not_indexed(column) if who and dialect == "sqlite" else column) == value)
    if f.created_from is not None:
        out.append(Contact.id >= ulid_floor(f.created_from - ID_SLACK))
        out.append(Contact.created_at >= f.created_from)
    if f.created_before is not None:
        out.append(Contact.id < ulid_floor(f.created_before + ID_SLACK))
        out.append(Contact.created_at < f.created_before)
    if f.term_prefixes or f.exact_terms:
        out.append(Contact.debtor_id.in_(_debtors_with_all(f)))
    if before_id is not None:
        out.append(Contact.id < before_id)
    return out


def page_statement(
    f: SearchFilter, *, before_id: str | None, limit: int, dialect: str
) -> Select[*tuple[Any, ...]]:
    """The page of contacts first, then their debtors' names: the debtors are read for the rows shown only,
    and never drive the plan."""
    page = (
        select(*_CONTACT_COLUMNS)
        .where(*conditions(f, before_id=before_id, dialect=dialect))
        .order_by(Contact.id.desc())
        .limit(limit)
        .subquery("page")
    )
    c = page.c
    return (
        select(
            c.id,
            c.created_at,
            c.updated_at,
            c.send_at,
            c.debtor_id,
            Debtor.ref,
            Debtor.name,
            c.case_id,
            c.kind,
            c.channel,
            c.channel_preference,
            c.status,
            c.status_reason,
        )
        .join(Debtor, Debtor.id == c.debtor_id)
        .order_by(c.id.desc())
    )


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def search_page(
    session: AsyncSession, f: SearchFilter, *, before_id: str | None, limit: int
) -> list[Found]:
    """Up to ``limit`` matching contacts older than ``before_id`` (all when ``None``), newest first."""
    statement = page_statement(f, before_id=before_id, limit=limit, dialect=_dialect(session))
    return [Found(*row) for row in await session.execute(statement)]


async def count_up_to(
    session: AsyncSession, f: SearchFilter, cap: int, *, before_id: str | None = None
) -> int:
    """How many contacts match (older than ``before_id``), counting no further than ``cap + 1``, so that "too
    many" costs a bounded read however large the log is."""
    where = conditions(f, before_id=before_id, dialect=_dialect(session))
    bounded = select(Contact.id).where(*where).limit(cap + 1).subquery()
    return int((await session.execute(select(func.count()).select_from(bounded))).scalar_one())


# ---- query plans (the tests check that every filter is answered by an index) ----


class _Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if compiler.dialect.name == "sqlite" else "EXPLAIN "
    return prefix + compiler.process(element.statement, **kw)


async def explain_page(
    session: AsyncSession, f: SearchFilter, *, before_id: str | None = None, limit: int = 51
) -> list[str]:
    """The database's plan for one page of this search, a line per step (SQLite's ``detail`` column,
    PostgreSQL's text plan)."""
    dialect = _dialect(session)
    rows = await session.execute(
        _Explain(page_statement(f, before_id=before_id, limit=limit, dialect=dialect))
    )
    if dialect == "sqlite":
        return [str(row[-1]) for row in rows]
    return [str(row[0]) for row in rows]


async def analyze(session: AsyncSession) -> None:
    """Refresh the planner's statistics of the searched tables (PostgreSQL's autovacuum does this by itself
    after bulk loads; a test that loads and queries at once must ask)."""
    for table in _SEARCHED_TABLES:
        await session.execute(text(f"ANALYZE {table}"))
