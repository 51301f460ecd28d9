"""``mpq serve``: run the HTTP search service (registered on import, listed in ``mpq.cli.EXTENSIONS``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from mpq.cli import command
from mpq.errors import MpqError

from .guard import LOOPBACK_NAMES
from .guard import is_loopback as _is_loopback_name


class ServeRefused(MpqError):
    """The server would start in an unsafe or impossible configuration."""


def is_loopback(host: str) -> bool:
    """True when binding ``host`` serves this machine only (``localhost`` or a loopback address)."""
    bare = host.strip().lower()
    return bare in LOOPBACK_NAMES or (not bare.endswith(".localhost") and _is_loopback_name(bare))


def masked(url: str) -> str:
    """A database or storage URL with its password replaced by ``***``, safe to print."""
    from mpq.search.storage import mask_url

    return mask_url(url)


def read_token(token_file: Optional[str]) -> Optional[str]:
    """The bearer token from ``--token-file`` (first line) or ``$MPQ_TOKEN``; never from the command line."""
    if token_file is None:
        return os.environ.get("MPQ_TOKEN") or None
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ServeRefused(f"--token-file {token_file}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not token:
        raise ServeRefused(f"--token-file {token_file}: the file is empty")
    return token


def check_db_url(url: str, option: str) -> None:
    """Refuse a ``--db``/``--search-storage`` that is not a database URL, naming the option."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise ServeRefused(
            f"{option} {masked(url)!r} is not a database URL; use e.g. sqlite:///mpq.db or postgresql://user@host/db"
        ) from None


def _serve_args(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="sqlite:///mpq.db", help="SQLAlchemy URL: sqlite:///FILE (default mpq.db) or postgresql://...")
    p.add_argument("--token-file", metavar="FILE",
                   help="require 'Authorization: Bearer TOKEN', TOKEN read from FILE (default: $MPQ_TOKEN)")
    p.add_argument("--search-storage", metavar="URL",
                   help="Optuna storage for searches that name a study (sqlite:///FILE, journal:///FILE, postgresql://...); "
                        "default: none, searches run in memory and requests cannot name a study")
    p.add_argument("--workers", type=int, default=None, help="solver processes for synchronous requests (default: CPU count; 0 = threads)")
    p.add_argument("--max-searches", type=int, default=2, help="background searches run at once")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first, e.g. to register a solver (repeatable)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


@command("serve", "run the HTTP search service: plans, frontiers and background searches", _serve_args)
def cmd_serve(args) -> int:
    from mpq.extras import require

    require("fastapi", "mpq serve")
    uvicorn = require("uvicorn", "mpq serve")
    from .limits import ServiceConfig

    token = read_token(args.token_file)
    if not is_loopback(args.host) and not token:
        raise ServeRefused(
            f"--host {args.host} is reachable from other machines: give a token with --token-file FILE or $MPQ_TOKEN, "
            "or bind 127.0.0.1"
        )
    if not 0 < args.port < 65536:
        raise ServeRefused(f"--port must be in 1..65535, got {args.port}")
    check_db_url(args.db, "--db")
    if args.search_storage is not None and not args.search_storage.startswith("journal:"):
        check_db_url(args.search_storage, "--search-storage")
    config = ServiceConfig(db_url=args.db, token=token, host=args.host, port=args.port, search_storage=args.search_storage,
                           max_searches=max(1, args.max_searches), plugins=tuple(args.plugin))
    if args.workers is not None:
        config.solve_workers = max(0, args.workers)
    _check_database(args.db)
    from .app import create_app

    auth = "a bearer token" if token else "no token"
    storage = f"; search storage {masked(args.search_storage)}" if args.search_storage else ""
    print(f"mpq serve: http://{args.host}:{args.port} ({auth}; database {masked(args.db)}{storage}; "
          f"{config.solve_workers} solver processes)", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug")
    return 0


def _check_database(url: str) -> None:
    """Open the service's database once before serving, so an unreachable or read-only one is a named error."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from .store import Store

    try:
        Store(url).close()
    except (SQLAlchemyError, OSError, ImportError) as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        password = make_url(url).password
        if password:
            reason = reason.replace(str(password), "***")
        raise ServeRefused(f"--db {masked(url)}: cannot open the service's database ({reason})") from None
