"""A problem compiled to numpy arrays: what every solver actually optimizes.

Tied layers are merged into one decision group whose options are the ids they share, with costs
and resources summed over the members. Resources are integers wherever the problem's are
(bytes, bits, BitOps), so exact solvers can compare budgets without rounding.

:class:`Arrays` is the padded ``(groups x options)`` form that vectorized solvers consume: a group
with fewer options repeats its last one, so a padded index is always a valid (duplicate) choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

import numpy as np

from mpq.columnar import ProblemColumns, formats, structures
from mpq.errors import DocumentError, PlanInfeasible, SolverFailed
from mpq.plan import build_plan, violations
from mpq.schema import RESOURCES, Plan, Problem, Provenance, SolverInfo


def _dtype(constraint: str):
    return np.int64 if RESOURCES[constraint].integral else np.float64


def to_resource_units(constraint: str, cap: float, total_params: int) -> float:
    """A constraint's cap in the units of its resource (average bits -> total bits)."""
    return cap * total_params if RESOURCES[constraint].per_param else float(cap)


def to_constraint_units(constraint: str, amount: float, total_params: int) -> float:
    """A resource amount in the units of its constraint (total bits -> average bits)."""
    return amount / total_params if RESOURCES[constraint].per_param else amount


@dataclass
class Arrays:
    """Padded numpy form of a problem without pairs: ``cost[g, k]`` and ``resources[name][g, k]``."""

    cost: np.ndarray  # (groups, options) float64
    resources: dict[str, np.ndarray]  # constraint name -> (groups, options), int64 where integral
    n_options: np.ndarray  # (groups,) real options per group; columns beyond repeat the last one
    caps: dict[str, float]  # constraint name -> cap in resource units

    @classmethod
    def from_ragged(cls, cost: list[np.ndarray], resources: Mapping[str, list[np.ndarray]], caps: Mapping[str, float]) -> "Arrays":
        n = np.fromiter((len(c) for c in cost), dtype=np.int64, count=len(cost))
        offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
        idx = offsets[:, None] + np.minimum(np.arange(int(n.max())), n[:, None] - 1)
        res = {}
        for name, rs in resources.items():
            flat = np.concatenate(rs)
            res[name] = flat[idx]
        return cls(np.concatenate(cost).astype(np.float64)[idx], res, n, dict(caps))

    @property
    def n_groups(self) -> int:
        return self.cost.shape[0]

    def take(self, a: np.ndarray, choice: np.ndarray) -> np.ndarray:
        return a[np.arange(a.shape[0]), choice]

    def objective(self, choice: np.ndarray) -> float:
        return float(self.take(self.cost, choice).sum())

    def usage(self, choice: np.ndarray) -> dict[str, float]:
        return {n: float(self.take(r, choice).sum()) for n, r in self.resources.items()}

    def fits(self, choice: np.ndarray) -> bool:
        use = self.usage(choice)
        return all(use[n] <= self.caps[n] * (1 + 1e-12) for n in self.caps)

    def min_resource(self, name: str) -> float:
        r = self.resources[name]
        low = r[:, 0].copy()
        for j in range(1, r.shape[1]):  # column by column: numpy's short-row min is slow
            np.minimum(low, r[:, j], out=low)
        return float(low.sum())

    def real(self, choice: np.ndarray) -> np.ndarray:
        """Map padded duplicates back to the real option they repeat."""
        return np.minimum(np.asarray(choice, dtype=np.int64), self.n_options - 1)


@dataclass
class Compiled:
    problem: Problem
    groups: list[list[str]]  # layer names per decision group
    option_ids: list[list[str]]  # option ids per group
    cost: list[np.ndarray]  # float64 distortion per option, summed over the group's layers
    resources: dict[str, list[np.ndarray]]  # constraint name -> per-group resource per option
    caps: dict[str, float]  # constraint name -> cap in resource units (avg bits -> total bits)
    pairs: list[tuple[int, int, int, int, float]] = field(default_factory=list)  # (ga, ka, gb, kb, d)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @cached_property
    def arrays(self) -> Arrays:
        """The padded form (pairs are not in it: solvers that use it must reject pairwise terms)."""
        return Arrays.from_ragged(self.cost, self.resources, self.caps)

    def min_resource(self, name: str) -> float:
        return self.arrays.min_resource(name)

    def objective(self, choice: np.ndarray) -> float:
        value = self.arrays.objective(self.arrays.real(choice))
        value += sum(d for ga, ka, gb, kb, d in self.pairs if choice[ga] == ka and choice[gb] == kb)
        return value

    def usage(self, choice: np.ndarray) -> dict[str, float]:
        return self.arrays.usage(self.arrays.real(choice))

    def fits(self, choice: np.ndarray) -> bool:
        use = self.usage(choice)
        return all(use[n] <= self.caps[n] * (1 + 1e-12) for n in self.caps)

    @property
    def limits(self) -> dict[str, float]:
        """The constraints as the user gave them."""
        return self.problem.constraints.active()

    def cap_value(self, name: str, resource_amount: float) -> float:
        """Resource units back to the constraint's own units (total bits -> average bits)."""
        return to_constraint_units(name, resource_amount, self.problem.total_params)

    def check_feasible(self) -> None:
        """Raise :class:`PlanInfeasible` naming the smallest feasible budget of each broken constraint."""
        low = {n: self.min_resource(n) for n in self.caps}
        minimum = {n: self.cap_value(n, low[n]) for n in self.caps}
        broken = [n for n in self.caps if low[n] > self.caps[n] * (1 + 1e-12)]
        if broken:
            parts = [
                f"{n}={self.limits[n]:g} is infeasible: the smallest plan needs {n}={_fmt(n, minimum[n])}"
                for n in broken
            ]
            raise PlanInfeasible("; ".join(parts) + " (every layer at its smallest option)", minimum)

    def plan(self, choice: np.ndarray, solver: SolverInfo, provenance: Provenance | None = None, *, verify: bool = True) -> Plan:
        """The ``mpq.plan/v1`` for a per-group choice; verifies every constraint exactly before returning it.

        ``verify=False`` builds a candidate plan that may break the budget (for solvers that evaluate
        candidates on the model); a returned solution is always verified.
        """
        choice = self.arrays.real(choice)
        if verify and not self.fits(choice):
            use = self.usage(choice)
            raise SolverFailed(
                f"solver {solver.name!r} returned a choice that breaks the budget "
                + ", ".join(f"{n}: {self.cap_value(n, use[n]):g} > {self.problem.constraints.active()[n]:g}" for n in self.caps if use[n] > self.caps[n])
            )
        by_layer = {}
        for g, names in enumerate(self.groups):
            for n in names:
                by_layer[n] = self.option_ids[g][int(choice[g])]
        plan = build_plan(self.problem, by_layer, solver, provenance=provenance)
        # every pair term of the problem, including those folded into a tied group's cost
        pair_d = sum(p.distortion for p in self.problem.pairs if by_layer[p.a] == p.option_a and by_layer[p.b] == p.option_b)
        if pair_d:
            plan.totals.distortion = plan.totals.distortion + pair_d
        bad = violations(plan.totals, self.problem.constraints)
        if bad and verify:
            raise SolverFailed(f"solver {solver.name!r} produced a plan that breaks: {'; '.join(bad)}")
        return plan

    def plan_columns(self, choice: np.ndarray, solver: SolverInfo, provenance: Provenance | None = None):
        """The plan as columns (``mpq.plan-columns/v1``), verified like :meth:`plan`."""
        from mpq.plan_columns import PlanColumns

        return PlanColumns.from_plan(self.plan(choice, solver, provenance))


def _fmt(name: str, value: float) -> str:
    if RESOURCES[name].per_param or not RESOURCES[name].integral:
        return f"{value:.6g}"
    return f"{value:.0f}"


def _compile_untied(problem: Problem, active: Mapping[str, float]):
    """One group per layer (no ties), with one numpy array per column split into groups: the
    service compiles a 200-layer problem per request."""
    layers = problem.layers
    groups = [[l.name] for l in layers]
    group_of = {l.name: g for g, l in enumerate(layers)}
    option_ids = [[o.id for o in l.options] for l in layers]
    ends = np.cumsum([len(ids) for ids in option_ids])
    spans = list(zip([0, *ends[:-1].tolist()], ends.tolist()))
    flat = [o for l in layers for o in l.options]

    def split(column: np.ndarray) -> list[np.ndarray]:
        return [column[a:b] for a, b in spans]

    cost = split(np.array([o.distortion for o in flat], dtype=np.float64))
    resources: dict[str, list[np.ndarray]] = {}
    for n in active:
        attr = RESOURCES[n].option_field
        values = [getattr(o, attr) for o in flat]
        if None in values:
            i = values.index(None)
            layer = layers[int(np.searchsorted(ends, i, side="right"))]
            raise DocumentError(f"layer {layer.name!r}, option {flat[i].id!r}: {attr} is null, but the problem constrains {n}")
        resources[n] = split(np.array(values, dtype=_dtype(n)))
    return groups, group_of, option_ids, cost, resources


def _compile_tied(problem: Problem, active: Mapping[str, float]):
    """Groups of tied layers: options they share, costs and resources summed over members."""
    by_name = {l.name: l for l in problem.layers}
    tie_of: dict[str, list[str]] = {}
    for tie in problem.ties:
        for n in tie:
            tie_of[n] = list(tie)
    groups: list[list[str]] = []
    seen: set[str] = set()
    for l in problem.layers:
        if l.name in seen:
            continue
        members = tie_of.get(l.name, [l.name])
        seen.update(members)
        groups.append(members)
    option_ids, cost = [], []
    resources: dict[str, list[np.ndarray]] = {n: [] for n in active}
    group_of: dict[str, int] = {}
    attrs = [(n, RESOURCES[n].option_field) for n in active]
    for g, members in enumerate(groups):
        first = by_name[members[0]]
        if len(members) == 1:  # a layer in no tie
            group_of[first.name] = g
            opts = first.options
            option_ids.append([o.id for o in opts])
            cost.append(np.array([o.distortion for o in opts], dtype=np.float64))
            for n, attr in attrs:
                values = [getattr(o, attr) for o in opts]
                if None in values:
                    oid = opts[values.index(None)].id
                    raise DocumentError(f"layer {first.name!r}, option {oid!r}: {attr} is null, but the problem constrains {n}")
                resources[n].append(np.array(values, dtype=_dtype(n)))
            continue
        common = [o.id for o in first.options if all(_has(by_name[m], o.id) for m in members[1:])]
        option_ids.append(common)
        c = np.zeros(len(common))
        res = {n: np.zeros(len(common), dtype=np.float64) for n in active}
        for m in members:
            layer = by_name[m]
            group_of[m] = g
            opts = {o.id: o for o in layer.options}
            for k, oid in enumerate(common):
                o = opts[oid]
                c[k] += o.distortion
                for n in active:
                    value = getattr(o, RESOURCES[n].option_field)
                    if value is None:
                        raise DocumentError(
                            f"layer {m!r}, option {oid!r}: {RESOURCES[n].option_field} is null, but the problem constrains {n}"
                        )
                    res[n][k] += value
        cost.append(c)
        for n in active:
            r = res[n]
            resources[n].append(r.astype(np.int64) if RESOURCES[n].integral else r)
    return groups, group_of, option_ids, cost, resources


def compile_problem(problem: Problem) -> Compiled:
    active = problem.constraints.active()
    if not problem.ties:
        groups, group_of, option_ids, cost, resources = _compile_untied(problem, active)
    else:
        groups, group_of, option_ids, cost, resources = _compile_tied(problem, active)
    caps = {n: to_resource_units(n, v, problem.total_params) for n, v in active.items()}
    pairs = []
    index = [{oid: k for k, oid in enumerate(ids)} for ids in option_ids] if problem.pairs else []
    for p in problem.pairs:
        ga, gb = group_of[p.a], group_of[p.b]
        ka, kb = index[ga].get(p.option_a), index[gb].get(p.option_b)
        if ka is None or kb is None:
            continue  # the option was dropped by a tie, so the pair can never be active
        if ga == gb:
            if ka == kb:
                cost[ga][ka] += p.distortion
            continue
        pairs.append((ga, ka, gb, kb, float(p.distortion)))
    return Compiled(problem, groups, option_ids, cost, resources, caps, pairs)


def _has(layer, oid: str) -> bool:
    return any(o.id == oid for o in layer.options)


class CompiledColumns(Compiled):
    """A columnar problem (no ties, no pairs) compiled straight to :class:`Arrays`, for 100k+ groups.

    ``cost``/``resources`` lists and group names are built only if a solver asks for them.
    """

    def __init__(self, columns):
        self.columns = columns
        self.problem = None
        self.pairs = []
        active = columns.constraints.active()
        self.caps = {n: to_resource_units(n, v, columns.total_params) for n, v in active.items()}
        a = columns.arrays
        G, R = columns.n_layers, columns.n_rows
        if R % G == 0 and _uniform(a["row_layer"], R // G):  # every layer has K options: the padded form is a view
            K = R // G
            n = np.full(G, K, dtype=np.int64)
            idx = np.arange(R, dtype=np.int64).reshape(G, K)

            def take(col: np.ndarray) -> np.ndarray:
                return col.reshape(G, K)
        else:
            off = columns.offsets()
            n = np.diff(off)
            idx = off[:-1, None] + np.minimum(np.arange(int(n.max())), n[:, None] - 1)

            def take(col: np.ndarray) -> np.ndarray:
                return col[idx]
        self.rows = idx  # (groups, options) row of each padded option
        for name in active:  # a constraint given after loading (mpq solve --budget) may name a null column
            field = RESOURCES[name].option_field
            null = np.isnan(a[field]) if a[field].dtype.kind == "f" else a[field] < 0
            if null.any():
                r = int(np.flatnonzero(null)[0])
                raise DocumentError(f"layer {str(a['layer_name'][a['row_layer'][r]])!r}, option "
                                    f"{str(a['option_names'][a['row_option'][r]])!r}: {field} is null, but the problem constrains {name}")
        res = {name: take(a[RESOURCES[name].option_field]) for name in active}
        self.__dict__["arrays"] = Arrays(take(a["distortion"]).astype(np.float64, copy=False), res, n, dict(self.caps))

    @property
    def n_groups(self) -> int:
        return self.columns.n_layers

    @cached_property
    def groups(self) -> list[list[str]]:
        return [[str(x)] for x in self.columns.arrays["layer_name"]]

    @cached_property
    def option_ids(self) -> list[list[str]]:
        names = self.columns.arrays["option_names"][self.columns.arrays["row_option"]]
        return [list(names[r[:k]]) for r, k in zip(self.rows, self.arrays.n_options)]

    @cached_property
    def cost(self) -> list[np.ndarray]:
        return [c[:k] for c, k in zip(self.arrays.cost, self.arrays.n_options)]

    @cached_property
    def resources(self) -> dict[str, list[np.ndarray]]:
        return {name: [r[:k] for r, k in zip(rs, self.arrays.n_options)] for name, rs in self.arrays.resources.items()}

    def cap_value(self, name: str, resource_amount: float) -> float:
        return to_constraint_units(name, resource_amount, self.columns.total_params)

    @property
    def limits(self) -> dict[str, float]:
        return self.columns.constraints.active()

    def plan(self, choice: np.ndarray, solver: SolverInfo, provenance: Provenance | None = None, *, verify: bool = True) -> Plan:
        """The ``mpq.plan/v1`` (one entry per layer), built without re-validating each row."""
        from mpq.plan import now
        from mpq.schema import PlanLayer, Totals
        from mpq import __version__

        choice = self.arrays.real(choice)
        if verify and not self.fits(choice):
            raise SolverFailed(f"solver {solver.name!r} returned a choice that breaks the budget")
        cols = self.columns
        a = cols.arrays
        rows = self.rows[np.arange(self.n_groups), choice]
        names = a["option_names"][a["row_option"][rows]]
        layers = []
        fmts, structs = formats(), structures()
        for i, r in enumerate(rows):
            f = cols.layer_fields(i)
            gs, ab, bo, lat = int(a["group_size"][r]), int(a["a_bits"][r]), int(a["bitops"][r]), float(a["latency_ms"][r])

            layers.append(PlanLayer.model_construct(
                **f, option=str(names[i]), w_bits=int(a["w_bits"][r]), group_size=gs or None, format=fmts[int(a["row_format"][r])],
                symmetric=bool(a["symmetric"][r]), prune_ratio=float(a["prune_ratio"][r]), prune_structure=structs[int(a["row_structure"][r])],
                a_bits=ab or None, bits=int(a["bits"][r]), bytes=int(a["bytes"][r]), bitops=None if bo < 0 else bo,
                latency_ms=None if lat != lat else lat, distortion=float(a["distortion"][r]),
            ))
        params = cols.total_params
        bitops = None if (a["bitops"][rows] < 0).any() else int(a["bitops"][rows].sum())
        latency = None if np.isnan(a["latency_ms"][rows]).any() else float(a["latency_ms"][rows].sum())
        totals = Totals(bytes=int(a["bytes"][rows].sum()), avg_bits=float(a["bits"][rows].sum()) / params if params else 0.0,
                        bitops=bitops, latency_ms=latency, distortion=float(a["distortion"][rows].sum()))
        prov = provenance or Provenance(estimator=cols.estimator, model=cols.model)
        prov = prov.model_copy(update={"mpq_version": prov.mpq_version or __version__, "created": prov.created or now()})
        plan = Plan.model_construct(layers=layers, totals=totals, constraints=self.limits, solver=solver, provenance=prov)
        bad = violations(totals, cols.constraints)
        if bad and verify:
            raise SolverFailed(f"solver {solver.name!r} produced a plan that breaks: {'; '.join(bad)}")
        return plan

    def plan_columns(self, choice: np.ndarray, solver: SolverInfo, provenance: Provenance | None = None):
        """The plan as columns, straight from the problem's rows: no Python object per group."""
        from mpq.plan import now
        from mpq.plan_columns import PlanColumns
        from mpq import __version__

        choice = self.arrays.real(choice)
        if not self.fits(choice):
            raise SolverFailed(f"solver {solver.name!r} returned a choice that breaks the budget")
        cols = self.columns
        rows = self.rows[np.arange(self.n_groups), choice]
        prov = provenance or Provenance(estimator=cols.estimator, model=cols.model)
        prov = prov.model_copy(update={"mpq_version": prov.mpq_version or __version__, "created": prov.created or now()})
        plan = PlanColumns.from_rows(cols.arrays, rows, self.limits, solver, prov)
        bad = violations(plan.totals, cols.constraints)
        if bad:
            raise SolverFailed(f"solver {solver.name!r} produced a plan that breaks: {'; '.join(bad)}")
        return plan


def _uniform(row_layer: np.ndarray, k: int) -> bool:
    """Rows grouped by layer (checked on load) with exactly ``k`` rows per layer."""
    return bool((row_layer[::k] == np.arange(row_layer.size // k)).all()) and bool((row_layer[k - 1::k] == np.arange(row_layer.size // k)).all())


def compile_any(problem) -> Compiled:
    """A JSON problem or a columnar one (columns with ties or pairs go through the JSON model)."""

    if isinstance(problem, Compiled):  # compiled already (the service keeps compiled problems)
        return problem
    if isinstance(problem, ProblemColumns):
        if problem.ties or problem.pairs:
            return compile_problem(problem.to_problem())
        return CompiledColumns(problem)
    return compile_problem(problem)
