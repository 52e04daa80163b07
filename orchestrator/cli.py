"""``orchestrator``: run | web | worker | migrate | demo | import FILE | lint-templates | ..."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import auth, db, intake, logs, portfolio, queue, runtime
from orchestrator.policy.rules import RulesError, load_rules
from orchestrator.settings import Settings

IMPORT_CHUNK = 1000


def _settings() -> Settings:
    return Settings()


def _check_rules(settings: Settings) -> None:
    try:
        load_rules(settings.rules_file)
    except RulesError as exc:
        raise SystemExit(f"orchestrator: {exc}") from exc


async def _run(settings: Settings, *, web_app: bool, worker: bool, migrate: bool) -> None:
    with runtime.redis_for(settings) as redis_url:
        async with runtime.running(
            settings, redis_url, web_app=web_app, worker=worker, migrate=migrate
        ) as handle:
            if handle.url:
                print(f"orchestrator listening on {handle.url}  (Ctrl-C stops)", file=sys.stderr)
            await runtime.wait_for_signal()


async def _migrate(settings: Settings) -> None:
    await db.upgrade(settings.resolved_database_url)
    print(f"database at head: {_safe_url(settings.resolved_database_url)}", file=sys.stderr)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def _create_api_key(settings: Settings, scopes: list[str], name: str) -> str:
    await db.upgrade(settings.resolved_database_url)
    engine = db.create_engine(settings.resolved_database_url)
    try:
        return await auth.create_api_key(db.session_factory(engine), name=name, scopes=scopes)
    finally:
        await engine.dispose()


async def _import(settings: Settings, path: Path, fmt: str | None, errors_path: Path | None) -> int:
    from tqdm import tqdm

    total = portfolio.count_rows(path, fmt)
    await db.upgrade(settings.resolved_database_url)
    engine = db.create_engine(settings.resolved_database_url)
    sessions = db.session_factory(engine)
    counts = {"queued": 0, "existing": 0, "rejected": 0}
    problems: list[tuple[int, str, str]] = []
    try:
        with runtime.redis_for(settings) as redis_url:
            redis = await queue.connect(redis_url)
            try:
                rows = portfolio.read_rows(path, fmt)
                with tqdm(total=total, unit="contact", desc=f"importing {path.name}", file=sys.stderr) as bar:
                    chunk: list[portfolio.Row] = []
                    for row in rows:
                        chunk.append(row)
                        if len(chunk) >= IMPORT_CHUNK:
                            _tally(
                                await _import_chunk(sessions, redis, settings, chunk), chunk, counts, problems
                            )
                            bar.update(len(chunk))
                            chunk = []
                    if chunk:
                        _tally(await _import_chunk(sessions, redis, settings, chunk), chunk, counts, problems)
                        bar.update(len(chunk))
            finally:
                await redis.aclose()
    finally:
        await engine.dispose()
    print(
        f"{counts['queued']} queued, {counts['existing']} already known (idempotency key), "
        f"{counts['rejected']} rejected",
        file=sys.stderr,
    )
    if problems:
        target = errors_path or path.with_name(path.name + ".errors.csv")
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "location", "problem"])
            writer.writerows(problems)
        for line, loc, msg in problems[:20]:
            print(f"  line {line}: {loc}: {msg}", file=sys.stderr)
        if len(problems) > 20:
            print(f"  ... {len(problems) - 20} more", file=sys.stderr)
        print(f"every rejected row is listed in {target}", file=sys.stderr)
    return 1 if counts["rejected"] else 0


async def _import_chunk(
    sessions: Any, redis: Any, settings: Settings, chunk: list[portfolio.Row]
) -> list[intake.ItemResult]:
    items: list[Any] = []
    for index, row in enumerate(chunk):
        if row.error is not None:
            items.append(
                intake.ItemResult(
                    index=index,
                    http_status=400,
                    title="Malformed row",
                    errors=[{"loc": [], "msg": row.error}],
                )
            )
        else:
            items.append(intake.parse_item(index, row.item))
    return await intake.accept(sessions, redis, settings.queue_name, items, source="import")


def _tally(
    results: list[intake.ItemResult],
    chunk: list[portfolio.Row],
    counts: dict[str, int],
    problems: list[tuple[int, str, str]],
) -> None:
    for result in results:
        line = chunk[result.index].line
        if result.ok:
            counts["existing" if result.existing else "queued"] += 1
            continue
        counts["rejected"] += 1
        for error in result.errors or [{"loc": [], "msg": result.detail or result.title or "rejected"}]:
            loc = ".".join(str(p) for p in error["loc"]) or "(row)"
            problems.append((line, loc, str(error["msg"])))


async def _import_returns(settings: Settings, path: Path, layout: str | None) -> int:
    """Returned letters from a file (print provider or Posten): recorded exactly as the webhook records them,
    so a letter reported both ways counts once."""
    from webhooks.ingress import event_rows, record_events
    from webhooks.returns import CARRIER, read_returns

    found = read_returns(path, layout)
    for error in found.errors:
        print(f"  line {error.line}: {error.message}", file=sys.stderr)
    await db.upgrade(settings.resolved_database_url)
    engine = db.create_engine(settings.resolved_database_url)
    try:
        with runtime.redis_for(settings) as redis_url:
            redis = await queue.connect(redis_url)
            try:
                raw = {"file": path.name, "layout": found.layout}
                rows = event_rows(CARRIER, found.events, raw)
                fresh = await record_events(db.session_factory(engine), redis, settings.queue_name, rows)
            finally:
                await redis.aclose()
    finally:
        await engine.dispose()
    print(
        f"{len(found.events)} returned letter(s) read ({found.layout}), {len(fresh)} new, "
        f"{len(found.events) - len(fresh)} already known, {len(found.errors)} row(s) rejected",
        file=sys.stderr,
    )
    return 1 if found.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Multichannel communication orchestrator for debt collection. "
        "Settings come from ORCH_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="API, webhooks and a worker in one process (embedded defaults when unset)")
    sub.add_parser("web", help="the HTTP service only")
    sub.add_parser("worker", help="one worker process (run as many as you like)")
    sub.add_parser("migrate", help="bring the database schema to the newest version")
    demo = sub.add_parser("demo", help="run everything, enqueue a sample portfolio, show where to look")
    demo.add_argument("--exit", action="store_true", help="stop once the sample has been handled")
    demo.add_argument(
        "--always-open",
        action="store_true",
        help="demo only: contact windows open around the clock (NOT lawful; for trying it out at night)",
    )
    imp = sub.add_parser("import", help="enqueue a portfolio file (CSV or NDJSON)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=["csv", "ndjson"])
    imp.add_argument("--errors", type=Path, help="where to write rejected rows (default FILE.errors.csv)")
    returns = sub.add_parser(
        "import-returns", help="returned letters from the print provider or Posten (a file)"
    )
    returns.add_argument("file", type=Path)
    returns.add_argument("--layout", help="the file's layout (default: recognised from its first lines)")
    why = sub.add_parser(
        "explain", help="why a contact went where it went, and what today's rules would decide differently"
    )
    why.add_argument("contact_id")
    lint = sub.add_parser(
        "lint-templates", help="render every message template in every language and check the rules"
    )
    lint.add_argument("--root", type=Path, help="a templates folder (default: the shipped library)")
    lint.add_argument("--language", action="append", help="only these languages (repeatable)")
    simulate = sub.add_parser(
        "simulate",
        help="a synthetic portfolio through the real policy, templates and experiments, against an oracle",
    )
    simulate.add_argument("--debtors", type=int, default=30_000, help="portfolio size (default 30000)")
    simulate.add_argument("--rounds", type=int, default=30, help="days spread over (default 30)")
    simulate.add_argument("--seed", type=int, default=1, help="the portfolio and its answers (default 1)")
    simulate.add_argument("--kind", default="reminder", help="message kind (default reminder)")
    simulate.add_argument("--language", default="nb", help="message language (default nb)")
    simulate.add_argument("--holdout", type=float, default=0.1, help="experiment holdout share (default 0.1)")
    simulate.add_argument(
        "--render-every", type=int, default=10, help="render and check every K-th contact (default 10)"
    )
    simulate.add_argument("--json", action="store_true", help="the whole result, with the experiment report")
    key = sub.add_parser("create-api-key", help="create an API key and print it alone on stdout")
    key.add_argument("--scopes", required=True, help=f"comma-separated: {','.join(auth.SCOPES)}")
    key.add_argument("--name", default=None, help="a label, e.g. the upstream system's name")
    op = sub.add_parser(
        "create-operator",
        help="create a console account (prints a generated password alone on stdout unless one is piped in)",
    )
    op.add_argument("username", help="lower-case letters, digits, '.', '_' or '-'")
    op.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    op.add_argument("--name", default=None, help="the name shown in the console and in timelines")
    op.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (at least 12 characters)"
    )
    op.add_argument("--reset", action="store_true", help="the account exists: set a new password and role")
    off = sub.add_parser("disable-operator", help="end a console account's sessions and refuse its sign-ins")
    off.add_argument("username")
    return parser


async def _with_sessions(settings: Settings, work: Any) -> Any:
    await db.upgrade(settings.resolved_database_url)
    engine = db.create_engine(settings.resolved_database_url)
    try:
        return await work(db.session_factory(engine))
    finally:
        await engine.dispose()


def _create_operator(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator.console import accounts

    generated = not args.password_stdin
    password = accounts.generate_password() if generated else sys.stdin.readline().rstrip("\r\n")
    try:
        asyncio.run(
            _with_sessions(
                settings,
                lambda sessions: accounts.create_operator(
                    sessions,
                    username=args.username,
                    role=args.role,
                    password=password,
                    display_name=args.name,
                    reset=args.reset,
                ),
            )
        )
    except ValueError as exc:
        print(f"orchestrator create-operator: {exc}", file=sys.stderr)
        return 2
    verb = "password reset for" if args.reset else "created"
    print(f"operator {args.username!r} ({args.role}) {verb}", file=sys.stderr)
    if generated:
        print(password)
    return 0


def _disable_operator(settings: Settings, username: str) -> int:
    from orchestrator.console import accounts

    try:
        asyncio.run(_with_sessions(settings, lambda s: accounts.disable_operator(s, username)))
    except ValueError as exc:
        print(f"orchestrator disable-operator: {exc}", file=sys.stderr)
        return 2
    print(f"operator {username!r} disabled; their sessions have ended", file=sys.stderr)
    return 0


def _lint_templates(settings: Settings, root: Path | None, languages: list[str] | None) -> int:
    from orchestrator.rendering import Renderer
    from orchestrator.template_lint import lint_templates
    from orchestrator.variants import CatalogueError

    try:
        renderer = Renderer(root)
    except CatalogueError as exc:
        print(f"orchestrator lint-templates: {exc}", file=sys.stderr)
        return 2
    report = lint_templates(renderer, sms_max_segments=settings.sms_max_segments, languages=languages)
    for finding in report.findings:
        print(finding)
    print(
        f"{report.rendered} messages rendered: {len(report.errors)} errors, "
        f"{len(report.fallbacks)} explicit language fallbacks",
        file=sys.stderr,
    )
    return 1 if report.errors else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    command = args.command
    if command in ("run", "web", "worker", "demo"):
        _check_rules(settings)
        runtime.tune_gc()
    if command == "run":
        asyncio.run(_run(settings, web_app=True, worker=True, migrate=True))
    elif command == "web":
        asyncio.run(_run(settings, web_app=True, worker=False, migrate=False))
    elif command == "worker":
        asyncio.run(_run(settings, web_app=False, worker=True, migrate=False))
    elif command == "migrate":
        asyncio.run(_migrate(settings))
    elif command == "demo":
        from orchestrator.sandbox.demo import run_demo

        return asyncio.run(run_demo(settings, exit_when_done=args.exit, always_open=args.always_open))
    elif command == "import":
        try:
            return asyncio.run(_import(settings, args.file, args.format, args.errors))
        except (portfolio.PortfolioError, OSError) as exc:
            print(f"orchestrator import: {exc}", file=sys.stderr)
            return 2
        except UnicodeDecodeError as exc:
            print(
                f"orchestrator import: {args.file} is not UTF-8 ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8 and import again; nothing was imported",
                file=sys.stderr,
            )
            return 2
    elif command == "import-returns":
        from webhooks.returns import UnknownLayout

        try:
            return asyncio.run(_import_returns(settings, args.file, args.layout))
        except (UnknownLayout, OSError) as exc:
            print(f"orchestrator import-returns: {exc}", file=sys.stderr)
            return 2
    elif command == "explain":
        from orchestrator.explain import ExplainError, explain

        try:
            print(asyncio.run(explain(settings, args.contact_id)))
        except ExplainError as exc:
            print(f"orchestrator explain: {exc}", file=sys.stderr)
            return 2
    elif command == "lint-templates":
        return _lint_templates(settings, args.root, args.language)
    elif command == "simulate":
        from orchestrator.simulate import cli as simulate_cli

        return simulate_cli(
            debtors=args.debtors,
            rounds=args.rounds,
            seed=args.seed,
            kind=args.kind,
            language=args.language,
            holdout=args.holdout,
            render_every=args.render_every,
            as_json=args.json,
            rules_file=settings.rules_file,
            sms_max_segments=settings.sms_max_segments,
        )
    elif command == "create-api-key":
        try:
            scopes = auth.parse_scopes(args.scopes)
        except ValueError as exc:
            print(f"orchestrator create-api-key: {exc}", file=sys.stderr)
            return 2
        name = args.name or f"key-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        print(asyncio.run(_create_api_key(settings, scopes, name)))
    elif command == "create-operator":
        return _create_operator(settings, args)
    elif command == "disable-operator":
        return _disable_operator(settings, args.username)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
