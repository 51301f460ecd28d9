"""Random small problems in the mpq.problem/v1 format, for the solver tests."""
from __future__ import annotations

import itertools

import numpy as np

from mpq.schema import Constraints, Option, Problem, ProblemLayer, ProblemPair

BITS = (2, 3, 4, 6, 8, 16)


def random_problem(rng: np.random.Generator, n_layers: int = 5, n_options: int = 4, *, ties: bool = False,
                   pairs: int = 0, constraints: tuple[str, ...] = ("max_bytes",), slack: float = 0.5,
                   ragged: bool = True) -> Problem:
    """Layers with noisy distortions and varied sizes; ``slack`` in [0, 1] places each budget between its min and max."""
    layers = []
    for i in range(n_layers):
        params = int(rng.integers(8, 400))
        k = int(rng.integers(2, n_options + 1)) if ragged else n_options
        bits = sorted(rng.choice(BITS, size=k, replace=False)) if not (ties and i == 1) else first_bits
        base = float(rng.uniform(0.1, 2.0))
        opts = []
        for b in bits:
            nbits = params * int(b) + (16 * 4 if b < 16 else 0)
            d = 0.0 if b == 16 else base * 4.0 ** (-b) * float(rng.uniform(0.5, 1.5))
            opts.append(Option(id=f"int{b}" if b < 16 else "fp16", w_bits=int(b), format="float" if b == 16 else "int",
                               bits=nbits, bytes=-(-nbits // 8), bitops=int(params * b * 16),
                               latency_ms=round(float(params * b * 1e-4 * rng.uniform(0.8, 1.2)), 6), distortion=round(d, 9)))
        if i == 0:
            first_bits = bits
        layers.append(ProblemLayer(name=f"l{i}", params=params, shape=[params], options=opts))
    tie_list = []
    if ties and n_layers >= 3:
        tie_list = [["l0", "l1"]]
    pair_list = []
    for _ in range(pairs):
        a, b = rng.choice(n_layers, size=2, replace=False)
        la, lb = layers[a], layers[b]
        pair_list.append(ProblemPair(a=la.name, option_a=la.options[int(rng.integers(len(la.options)))].id,
                                     b=lb.name, option_b=lb.options[int(rng.integers(len(lb.options)))].id,
                                     distortion=round(float(rng.uniform(-0.01, 0.05)), 6)))
    probe = Problem(layers=layers, ties=tie_list, pairs=pair_list, constraints=Constraints(max_bytes=1e18))
    caps = {}
    for name in constraints:
        lo, hi = resource_range(probe, name)
        value = lo + slack * (hi - lo)
        caps[name] = value / probe.total_params if name == "max_avg_bits" else max(value, 1e-9)
    return probe.model_copy(update={"constraints": Constraints(**caps)})


ATTR = {"max_bytes": "bytes", "max_avg_bits": "bits", "max_bitops": "bitops", "max_latency_ms": "latency_ms"}


def resource_range(problem: Problem, name: str) -> tuple[float, float]:
    attr = ATTR[name]
    lo = sum(min(getattr(o, attr) for o in l.options) for l in problem.layers)
    hi = sum(max(getattr(o, attr) for o in l.options) for l in problem.layers)
    return float(lo), float(hi)


def brute_force(problem: Problem) -> tuple[float, dict[str, str]] | None:
    """(best distortion, layer -> option) over every assignment within every constraint, or None."""
    names = [l.name for l in problem.layers]
    by = {l.name: l for l in problem.layers}
    tie_of = {n: tuple(t) for t in problem.ties for n in t}
    caps = problem.constraints.active()
    best = None
    for combo in itertools.product(*[[o.id for o in l.options] for l in problem.layers]):
        choice = dict(zip(names, combo))
        if any(choice[n] != choice[t[0]] for n, t in tie_of.items()):
            continue
        opts = [by[n].option(choice[n]) for n in names]
        ok = True
        for name, cap in caps.items():
            total = sum(getattr(o, ATTR[name]) for o in opts)
            if name == "max_avg_bits":
                total = total / problem.total_params
            if total > cap * (1 + 1e-12):
                ok = False
                break
        if not ok:
            continue
        d = sum(o.distortion for o in opts)
        d += sum(p.distortion for p in problem.pairs if choice[p.a] == p.option_a and choice[p.b] == p.option_b)
        if best is None or d < best[0] - 1e-15:
            best = (d, choice)
    return best


def seeded_problem(seed: int, n: int = 5, constraints=None, ties=(), pairs=False) -> Problem:
    """Small int2/3/4/8 problems from a seed, for the evolutionary and search tests."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n):
        p = int(rng.integers(40, 400))
        opts = []
        for b in (2, 3, 4, 8):
            bits = p * b + 16 * int(rng.integers(1, 8))
            opts.append({"id": f"int{b}", "w_bits": b, "bits": bits, "bytes": -(-bits // 8),
                         "bitops": p * b * 100, "distortion": float(rng.random() * 2.0 ** (-b) * p)})
        layers.append({"name": f"layer{i}", "params": p, "shape": [p // 4 or 1, 4], "options": opts})
    doc = {"schema": "mpq.problem/v1", "layers": layers, "ties": [list(t) for t in ties],
           "constraints": constraints or {"max_avg_bits": 3.5}}
    if pairs:
        doc["pairs"] = [{"a": "layer0", "option_a": "int2", "b": "layer1", "option_b": "int2", "distortion": 5.0}]
    return Problem.model_validate(doc)


#: A three-layer problem written by hand (max_bytes 6000; the optimum's distortion is 0.00511).
HAND = {
    "schema": "mpq.problem/v1",
    "layers": [
        {"name": "features.0", "params": 432, "macs": 110592, "shape": [16, 3, 3, 3], "options": [
            {"id": "int2", "w_bits": 2, "bytes": 140, "bitops": 3538944, "distortion": 0.09},
            {"id": "int4", "w_bits": 4, "bytes": 248, "bitops": 7077888, "distortion": 0.0021},
            {"id": "int8", "w_bits": 8, "bytes": 464, "bitops": 14155776, "distortion": 0.00001}]},
        {"name": "features.3", "params": 4608, "macs": 1179648, "shape": [32, 16, 3, 3], "options": [
            {"id": "int2", "w_bits": 2, "bytes": 1216, "bitops": 37748736, "distortion": 0.05},
            {"id": "int4", "w_bits": 4, "bytes": 2368, "bitops": 75497472, "distortion": 0.004},
            {"id": "int8", "w_bits": 8, "bytes": 4672, "bitops": 150994944, "distortion": 0.00002}]},
        {"name": "fc", "params": 5120, "macs": 5120, "shape": [10, 512], "options": [
            {"id": "int2", "w_bits": 2, "bytes": 1300, "bitops": 163840, "distortion": 0.02},
            {"id": "int4", "w_bits": 4, "bytes": 2580, "bitops": 327680, "distortion": 0.0011},
            {"id": "int8", "w_bits": 8, "bytes": 5140, "bitops": 655360, "distortion": 0.00001}]},
    ],
    "constraints": {"max_bytes": 6000},
}
