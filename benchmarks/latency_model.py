"""The additive latency model against whole-model timing, on the digits CNN and a tiny Llama.

For each model: ``mpq profile`` (torchao kernels where they run on this CPU, float otherwise) with
options int4/int8/fp16 × float or int8 activations, then several plans (uniform ones, and plans
made by ``mpq plan --latency-table --budget latency_ms=X`` with a memory budget beside it). Each plan
is realized with the same kernels and timed end to end; the prediction is the sum of its layers'
table times plus the profiled rest of the model. Timings are medians over interleaved rounds (the
plans take turns, so load on this shared machine hits them alike) at 1 CPU thread.
Run: ``python benchmarks/latency_model.py``.
"""
from __future__ import annotations

import statistics
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")

from mpq.cost import CandidateSet  # noqa: E402
from mpq.evaluate import uniform_plan  # noqa: E402
from mpq.graph import discover  # noqa: E402
from mpq.hf import lm_loss  # noqa: E402
from mpq.latency import input_shapes, measure_latency, model_overhead, option_latencies, profile, realize  # noqa: E402
from mpq.pipeline import plan_model  # noqa: E402
from mpq.workload import Workload  # noqa: E402

THREADS = 1
ROUNDS = 7
CANDIDATES = CandidateSet(bits=(4, 8, 16), a_bits=(None, 8))


def tiny_llama() -> Workload:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(1)
    batches = [({"input_ids": ids}, ids) for ids in (torch.randint(0, 256, (4, 64), generator=g) for _ in range(2))]
    return Workload(model, batches, lm_loss, name="tiny-llama (2 layers, d=256, 4x64 tokens)")


def digits() -> Workload:
    from mpq.examples.digits import workload

    return workload()


def run(workload: Workload) -> None:
    graph = discover(workload)
    table = profile(workload, graph, CANDIDATES.specs(), threads=THREADS, repeats=15)
    timing = model_overhead(table, workload)
    priced = option_latencies(table, graph, list(CANDIDATES.specs()), input_shapes(workload, graph))
    print(f"\n== {workload.name}: float {timing.float_ms:.3f} ms ± {timing.spread_ms:.2g}, rest of the model {timing.overhead_ms:.3f} ms")
    kernels = sorted({e.kernel for e in table.entries})
    print(f"   kernels: {', '.join(kernels)}")
    problem = plan_model(workload, {"max_avg_bits": 16}, estimator="weight-error", candidates=CANDIDATES).problem
    plans = {f"uniform {o}": uniform_plan(problem, o) for o in ("fp16", "int8", "int8-a8", "int4", "int4-a8")}
    def predict(plan):
        return sum(priced[l.name][l.option][0] for l in plan.layers) + timing.overhead_ms

    budgets = {}
    for ref in ("int8", "int4"):  # as fast as a uniform plan, within its memory, least distortion
        x = predict(plans[f"uniform {ref}"]) * 1.02
        bits = plans[f"uniform {ref}"].totals.avg_bits
        r = plan_model(workload, {"max_latency_ms": x, "max_avg_bits": bits}, estimator="weight-error",
                       candidates=CANDIDATES, latency_table=table)
        label = f"plan latency_ms={x:.3f}, avg_bits={bits:.2f}"
        plans[label] = r.plan
        budgets[label] = (x, r.latency_spread_ms)
    predicted = {k: (sum(priced[l.name][l.option][0] for l in p.layers) + timing.overhead_ms,
                     sum(priced[l.name][l.option][1] for l in p.layers) + timing.spread_ms) for k, p in plans.items()}
    realized = {k: realize(workload.model, p) for k, p in plans.items()}
    times: dict[str, list[float]] = {k: [] for k in plans}
    for _ in range(ROUNDS):
        for k, m in realized.items():
            times[k].append(measure_latency(m, workload, threads=THREADS, repeats=10)[0])
    print(f"   {'plan':38s} {'avg bits':>8s} {'predicted ms':>13s} {'measured ms':>12s} {'error':>7s}  within X + spread")
    for k, p in plans.items():
        pred, spread = predicted[k]
        meas = statistics.median(times[k])
        check = ""
        if k in budgets:
            x, s = budgets[k]
            check = f"{'yes' if meas <= x + s else 'NO'} ({meas:.3f} <= {x:.3f} + {s:.3f})"
        print(f"   {k:38s} {p.totals.avg_bits:8.2f} {pred:9.3f} ±{spread:5.2f} {meas:12.3f} {100 * (meas - pred) / meas:+6.0f}%  {check}")


def main() -> None:
    print(f"additive latency model vs whole-model timing (CPU, {THREADS} thread, medians of {ROUNDS} interleaved rounds)")
    for make in (digits, tiny_llama):
        run(make())


if __name__ == "__main__":
    main()
