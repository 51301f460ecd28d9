"""Problems the service has validated and compiled, kept for requests that differ only in their budget.

Clients typically send one sensitivity set many times with different budgets. A request body is
keyed by a hash of its bytes with the problem's ``constraints`` object cut out: a request whose key
was seen before is the same problem, solver and options byte for byte, so only its constraints are
validated (a small pydantic model), and the compiled problem and each plan layer's JSON are reused.
Any body the cut cannot handle (no ``constraints`` object, or more than one) takes the full path.
Only requests that passed the full validation are kept; the cache is bounded (least recently used).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from pydantic import ValidationError

from mpq.errors import DocumentError, SolverFailed
from mpq.plan import now, violations
from mpq.schema import Constraints, Plan, Problem, Provenance, Totals, format_validation_error
from mpq.solvers.compiled import Compiled, compile_problem, to_resource_units

from .payloads import PlanRequest
from .store import PlanRecord

#: the problem's constraints object: flat (numbers or null), so it has no braces inside
CONSTRAINTS = re.compile(rb'"constraints"\s*:\s*(\{[^{}]*\})')


def split_body(body: bytes, context: str = "") -> Optional[tuple[bytes, bytes]]:
    """(key, constraints JSON) of a request body, or None when it has not exactly one constraints object.

    ``context`` (the limits and settings the body was validated under) is part of the key.
    """
    found = CONSTRAINTS.search(body)
    if found is None or CONSTRAINTS.search(body, found.end()) is not None:
        return None
    a, b = found.span(1)
    key = hashlib.blake2b(context.encode(), digest_size=20)
    key.update(body[:a])
    key.update(b"\0")
    key.update(body[b:])
    return key.digest(), body[a:b]


@dataclass
class Entry:
    """One validated request: its problem, solver, options and time limit, and what solving it reuses."""

    request: PlanRequest
    seconds: Optional[float]
    total_params: int
    compiled: dict[frozenset, Compiled] = field(default_factory=dict)
    hits: int = 0  # requests that found this entry
    layer_json: Optional[list[list[str]]] = None  # plan-layer JSON per group and option, built on the first hit
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # (groups, options) per totals field

    def problem_with(self, constraints: Constraints) -> Problem:
        if not constraints.active():
            raise DocumentError("invalid problem: constraints: the problem sets no constraint; set at least one of "
                                "max_bytes, max_avg_bits, max_bitops, max_latency_ms")
        return self.request.problem.model_copy(update={"constraints": constraints})

    def compile(self, problem: Problem) -> Compiled:
        """The compiled problem for these constraints (the arrays are shared with earlier budgets)."""
        active = problem.constraints.active()
        names = frozenset(active)
        template = self.compiled.get(names)
        if template is None:
            template = self.compiled[names] = compile_problem(problem)
        caps = {n: to_resource_units(n, v, self.total_params) for n, v in active.items()}
        cp = dataclasses.replace(template, problem=problem, caps=caps)
        cp.__dict__["arrays"] = dataclasses.replace(template.arrays, caps=dict(caps))
        return cp

    def prepare(self) -> None:
        """Each option of each layer as the plan writes it, and the columns the totals sum."""
        from mpq.plan import build_plan
        from mpq.schema import SolverInfo

        problem = self.request.problem
        # plan k takes each layer's k-th option (a short layer repeats its last, as the compiled arrays do)
        width = max(len(l.options) for l in problem.layers)
        info = SolverInfo(name="-", status="feasible", objective=0.0)
        texts = []
        for k in range(width):
            plan = build_plan(problem, {l.name: l.options[min(k, len(l.options) - 1)].id for l in problem.layers}, info)
            texts.append([pl.model_dump_json(by_alias=True) for pl in plan.layers])
        cols = {k: [] for k in ("bytes", "bits", "bitops", "latency_ms", "distortion")}
        for layer in problem.layers:
            opts = [layer.options[min(k, len(layer.options) - 1)] for k in range(width)]
            cols["bytes"].append([o.bytes for o in opts])
            cols["bits"].append([o.bits if o.bits is not None else 8 * o.bytes for o in opts])
            cols["bitops"].append([-1 if o.bitops is None else o.bitops for o in opts])
            cols["latency_ms"].append([np.nan if o.latency_ms is None else o.latency_ms for o in opts])
            cols["distortion"].append([o.distortion for o in opts])
        self.columns = {k: np.array(v, dtype=np.float64 if k in ("latency_ms", "distortion") else np.int64)
                        for k, v in cols.items()}
        self.layer_json = [list(row) for row in zip(*texts)]


    def record(self, cp: Compiled, choice: np.ndarray, info) -> PlanRecord:
        """The stored plan for ``choice``: its JSON joined from each layer's, its totals summed from columns."""
        problem = cp.problem
        if self.hits == 0 or problem.ties or problem.pairs:  # a one-off request pays nothing for reuse
            return PlanRecord.of(cp.plan(choice, info))
        if self.layer_json is None:
            self.prepare()
        choice = cp.arrays.real(choice)
        if not cp.fits(choice):
            raise SolverFailed(f"solver {info.name!r} returned a choice that breaks the budget")
        rows = np.arange(len(choice))
        c = {k: v[rows, choice] for k, v in self.columns.items()}
        totals = Totals(
            bytes=int(c["bytes"].sum()), avg_bits=float(c["bits"].sum()) / self.total_params if self.total_params else 0.0,
            bitops=None if (c["bitops"] < 0).any() else int(c["bitops"].sum()),
            latency_ms=None if np.isnan(c["latency_ms"]).any() else sum(c["latency_ms"].tolist()),
            distortion=sum(c["distortion"].tolist()),  # summed in layer order, as mpq.plan.totals_of does
        )
        bad = violations(totals, problem.constraints)
        if bad:
            raise SolverFailed(f"solver {info.name!r} produced a plan that breaks: {'; '.join(bad)}")
        from mpq import __version__

        prov = Provenance(estimator=problem.estimator, model=problem.model, mpq_version=__version__, created=now())
        head = Plan.model_construct(layers=[], totals=totals, constraints=problem.constraints.active(), solver=info,
                                    provenance=prov).model_dump_json(by_alias=True)
        layers = ",".join(self.layer_json[g][k] for g, k in enumerate(choice.tolist()))
        body = head.replace('"layers":[]', f'"layers":[{layers}]', 1)
        model = problem.model
        return PlanRecord(body=body, fingerprint=model.fingerprint if model else None, model_name=model.name if model else None,
                          solver=info.name, status=info.status, bytes=totals.bytes, avg_bits=totals.avg_bits,
                          distortion=totals.distortion)


def make_entry(request: PlanRequest, seconds: Optional[float]) -> Entry:
    return Entry(request, seconds, request.problem.total_params)


class ProblemCache:
    """Entries by body key and context, least recently used dropped past ``size``; safe across threads."""

    def __init__(self, size: int = 32):
        self.size = size
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, body: bytes, context: str = "") -> Optional[tuple[Entry, Problem]]:
        """The entry of a body seen before under ``context`` and its problem with this body's constraints, or None."""
        split = split_body(body, context)
        if split is None:
            return None
        key, raw = split
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            entry.hits += 1
        try:
            constraints = Constraints.model_validate_json(raw)
        except ValidationError as e:
            raise DocumentError(format_validation_error(e, "problem.constraints")) from None
        return entry, entry.problem_with(constraints)

    def add(self, body: bytes, request: PlanRequest, seconds: Optional[float], context: str = "") -> Entry:
        entry = make_entry(request, seconds)
        split = split_body(body, context)
        if split is not None:
            with self._lock:
                self._entries[split[0]] = entry
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return entry

