"""``mpq serve``: run the HTTP search service (registered on import, listed in ``mpq.cli.EXTENSIONS``)."""
from __future__ import annotations

import ipaddress
import os

from mpq.cli import command
from mpq.errors import MpqError


class ServeRefused(MpqError):
    """The server would start in an unsafe or impossible configuration."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _serve_args(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="sqlite:///mpq.db", help="SQLAlchemy URL: sqlite:///FILE (default mpq.db) or postgresql://...")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $MPQ_TOKEN)")
    p.add_argument("--workers", type=int, default=None, help="solver processes for synchronous requests (default: CPU count; 0 = threads)")
    p.add_argument("--max-searches", type=int, default=2, help="background searches run at once")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first, e.g. to register a solver (repeatable)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


@command("serve", "run the HTTP search service: plans, frontiers and background searches", _serve_args)
def cmd_serve(args) -> int:
    from mpq.extras import require

    require("fastapi", "mpq serve")
    uvicorn = require("uvicorn", "mpq serve")
    from .app import create_app
    from .limits import ServiceConfig

    token = args.token or os.environ.get("MPQ_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise ServeRefused(
            f"--host {args.host} is reachable from other machines: give a token with --token or $MPQ_TOKEN, "
            "or bind 127.0.0.1"
        )
    if not 0 < args.port < 65536:
        raise ServeRefused(f"--port must be in 1..65535, got {args.port}")
    config = ServiceConfig(db_url=args.db, token=token, max_searches=max(1, args.max_searches), plugins=tuple(args.plugin))
    if args.workers is not None:
        config.solve_workers = max(0, args.workers)
    auth = "a bearer token" if token else "no token"
    print(f"mpq serve: http://{args.host}:{args.port} ({auth}; database {args.db}; {config.solve_workers} solver processes)", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug")
    return 0
