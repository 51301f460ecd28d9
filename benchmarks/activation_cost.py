"""W×A planning on the digits demo: predicted distortion against measured accuracy, at the BitOps of uniform W4A8.

Three ways to spend the same BitOps budget (MACs × w_bits × a_bits of uniform W4A8):
- uniform ``int4-a8``;
- the plan mpq made before activation sensitivity existed: the same weight distortions, activation
  bits free (every ``a_bits`` option costs 0 extra), which sends layers to 2-bit activations;
- today's plan: ``d(w, a) = d_w + d_a`` with ``d_a`` the measured loss increase of quantizing only
  the layer's input (``mpq.sensitivity.activation``).
Each is planned with ``hessian-trace`` and the exact DP, applied (weights fake-quantized, inputs
fake-quantized over calibrated ranges) and evaluated on the 540-image test split.
Run: ``python benchmarks/activation_cost.py``.
"""
from __future__ import annotations

from mpq.cost import CandidateSet, build_problem
from mpq.evaluate import metrics, uniform_plan
from mpq.apply import apply_plan
from mpq.examples.digits import workload
from mpq.graph import discover
from mpq.pipeline import sensitivities
from mpq.solvers import get_solver


def evaluate(w, plan) -> float:
    return metrics(w, apply_plan(w.model, plan, inplace=False, batches=w.batches))["accuracy"]


def main() -> None:
    w = workload()
    graph = discover(w)
    budget = sum(l.macs for l in graph) * 4 * 8
    print(f"digits CNN, BitOps budget = uniform W4A8 = {budget:,}\n")
    rows = []
    for label, a_bits in (("a-bits 4,8,16", (4, 8, None)), ("a-bits 2,4,8,16", (2, 4, 8, None))):
        cands = CandidateSet(a_bits=a_bits)
        table = sensitivities(w, "hessian-trace", graph=graph, candidates=cands, quiet=True)
        blind = table.model_copy(update={"layers": {n: s.model_copy(update={"activations": {k: 0.0 for k in s.activations}})
                                                    for n, s in table.layers.items()}})
        for how, t in (("activations free (before)", blind), ("d_w + d_a (now)", table)):
            problem = build_problem(graph, t, cands, {"max_bitops": budget})
            plan = get_solver("dp").solve(problem)
            true = build_problem(graph, table, cands, {"max_bitops": budget})  # predicted with d_a counted
            pred = sum(true.layer(l.name).option(l.option).distortion for l in plan.layers)
            rows.append((f"{label}: {how}", plan, pred))
        if label == "a-bits 4,8,16":
            problem = build_problem(graph, table, cands, {"max_bitops": budget})
            u = uniform_plan(problem, "int4-a8")
            rows.insert(0, ("uniform int4-a8", u, u.totals.distortion))
    print(f"{'plan':40s} {'bitops':>12s} {'predicted d':>12s} {'accuracy':>9s}  options")
    for label, plan, pred in rows:
        acc = evaluate(w, plan)
        opts = " ".join(l.option for l in plan.layers)
        print(f"{label:40s} {plan.totals.bitops:12,d} {pred:12.4g} {acc:9.4f}  {opts}")
    print(f"\nfull precision accuracy {metrics(w)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
