"""What one request may ask of the service, and the service's own settings.

Limits are checked at the boundary, once: a body over ``max_body_bytes`` gets 413, a problem over
the layer or option counts gets 413, solver seconds over the cap get 422, each with the limit and
the value received in the message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from mpq.errors import MpqError


class OverLimit(MpqError):
    """A request asks for more than the service allows (answered with ``status``: 413 or 422)."""

    def __init__(self, message: str, status: int = 413):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 32 * 1024 * 1024
    max_layers: int = 20_000
    max_options: int = 200_000  # candidate options over all layers
    max_options_per_layer: int = 256
    max_solver_options: int = 32  # keys of the request's "options" object
    max_plan_seconds: float = 60.0  # synchronous POST /v1/plans and /v1/frontiers
    default_plan_seconds: float = 10.0
    plan_grace_s: float = 5.0  # past max_plan_seconds + this, the solver process is stopped and 422 answered
    max_search_seconds: float = 24 * 3600.0
    max_frontier_points: int = 100
    default_frontier_points: int = 20
    max_page: int = 500
    #: POST requests read or solved at once; one more is answered 503 with Retry-After, not buffered
    max_concurrent: int = 16
    #: a request body must arrive within this many seconds (a slow or endless chunked body gets 408)
    body_timeout_s: float = 30.0

    def check_problem(self, problem) -> None:
        n_layers = len(problem.layers)
        if n_layers > self.max_layers:
            raise OverLimit(f"problem.layers: {n_layers} layers is over this service's limit of {self.max_layers}")
        total = 0
        for i, layer in enumerate(problem.layers):
            k = len(layer.options)
            if k > self.max_options_per_layer:
                raise OverLimit(
                    f"problem.layers[{i}].options: layer {layer.name!r} has {k} options, over the limit of "
                    f"{self.max_options_per_layer} per layer"
                )
            total += k
        if total > self.max_options:
            raise OverLimit(f"problem: {total} candidate options in all is over this service's limit of {self.max_options}")

    def time_limit(self, options: dict, cap: float, default: Optional[float]) -> Optional[float]:
        """The solver seconds a request asks for (``options.time_limit_s``), refused over ``cap``."""
        value = options.get("time_limit_s")
        if value is None:
            return None if default is None else min(default, cap)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise OverLimit(f"options.time_limit_s: expected a positive number of seconds, got {value!r}", status=422)
        if value > cap:
            raise OverLimit(f"options.time_limit_s: {value:g} s is over this service's limit of {cap:g} s per request", status=422)
        return float(value)

    def check_options(self, options: dict) -> None:
        if len(options) > self.max_solver_options:
            raise OverLimit(f"options: {len(options)} solver settings is over the limit of {self.max_solver_options}")


@dataclass
class ServiceConfig:
    """Everything ``create_app`` needs: where to store, who may call, how much work to accept."""

    db_url: str = "sqlite:///mpq.db"
    token: Optional[str] = None
    #: the address and port the server is bound to; on a loopback address, requests must name it in
    #: ``Host`` (and a loopback ``Origin``, when they send one): see :mod:`mpq.service.guard`.
    host: str = "127.0.0.1"
    port: Optional[int] = None
    #: the Optuna storage URL for searches that name a ``study``; a request never names a storage.
    #: None: searches run in memory, and a request that names a study is refused.
    search_storage: Optional[str] = None
    limits: Limits = field(default_factory=Limits)
    #: worker processes for synchronous solves; 0 solves in threads of the server process.
    solve_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: background searches running at once (each in its own process).
    max_searches: int = 2
    #: a running search whose server stopped is restarted this many times, then marked failed.
    max_restarts: int = 1
    #: seconds between a running search's heartbeats, and silence after which it counts as orphaned.
    heartbeat_s: float = 1.0
    stale_after_s: float = 5.0
    #: modules imported at start (here and in every worker) to register more solvers or estimators.
    plugins: tuple[str, ...] = ()
