"""Per-layer Hessian-trace accuracy and HVP cost: mpq's block probing against PyHessian, on an MLP and a CNN.

    .venv/bin/python benchmarks/trace_accuracy.py [--seeds 5] [--batches 1] [--no-cache] [--verify-whole]

Models: a 64-256-256-10 ReLU MLP (85k weights), trained here for a few
seconds on a seeded synthetic teacher task, and the embedded digits CNN (``mpq.examples.digits:workload``,
committed weights; its first conv has 144 weights). Each uses its first ``--batches`` calibration
batch(es) of 64 (or 128 for the MLP); all methods see the same data and the same target, the mean loss.

Reference: the exact trace of every weight block (one HVP per weight coordinate), cached in
``/tmp/mpq-trace-accuracy-*.json`` under a key of the model fingerprint and the data, so a rerun skips it
(first run about 3.5 minutes on a shared 2-core box, 2.7 of them for the exact traces).

Methods, each at 10, 30 and 100 HVPs per layer (a "HVP" is one Hessian-vector product on one batch):

* ``block Hutchinson``: mpq ``hessian-trace`` with ``sketch=0`` and exactly n Rademacher probes per
  layer, each restricted to the layer's weight block.
* ``block Hutch++``: mpq ``hessian-trace`` with ``sketch=k``, ``min_probes=max_probes=m``, ``2k + m = n``
  (k = n // 3): the block is deflated by an exact k-dimensional subspace, the rest probed.
* ``PyHessian whole-model``: PyHessian's own probe (``randint_like`` Rademacher over all parameters, as in
  ``hessian.trace()``) and its ``hessian_vector_product`` on the whole model; n HVPs give every layer n
  samples ``v_l . (H v)_l``, cross-layer terms included. (PyHessian's ``trace()`` returns only the total.)

Errors are the root mean square over ``--seeds`` seeds of the per-layer relative error, in %.

Timing (single thread, the same process): PyHessian seconds per HVP = ``hessian(...).trace(maxIter=100,
tol=-inf)`` time / 100; mpq seconds per HVP = a default ``hessian-trace`` run's time / the HVPs it counts
(graph rebuilds, sketching and bookkeeping included). Also shown: one block HVP per layer, batched 32 at
a time, and one whole-model HVP, as microbenchmarks.

Goal (a): every layer of the digits CNN within 5% of its exact trace with mpq's default
``hessian-trace``, in at least 10x less time than whole-model Hutchinson with PyHessian HVPs needs for
every layer within 5%. That HVP count is *estimated* from the whole-model per-layer single-probe
standard deviation s_l (pooled over all seeds' 100 samples): n_l = (1.96 s_l / (0.05 |tr_l|))^2, the
count at which the 95% error interval is +-5%, and n = max_l n_l; its time is n x PyHessian's seconds per
HVP (``--verify-whole`` runs that many once and prints the errors it reaches). Goal (b): mpq's seconds per HVP no more than PyHessian's, on each model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_probing import exact_traces  # noqa: E402  (the same exact reference as trace_probing.py)

from mpq.graph import discover  # noqa: E402
from mpq.sensitivity.hessian import HessianTraceEstimator  # noqa: E402
from mpq.workload import Workload, call_model  # noqa: E402

BUDGETS = (10, 30, 100)
Z95 = 1.96


def mlp_workload(batches: int) -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 10, generator=g)
    data = []
    for _ in range(4):
        x = torch.randn(128, 64, generator=g)
        data.append((x, (x @ teacher).argmax(1)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        for x, y in data[1:]:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    return Workload(model, data[:batches], nn.functional.cross_entropy, name="mlp 64-256-256-10 (trained here)")


def digits_workload(batches: int) -> Workload:
    from mpq.examples.digits import workload

    wl = workload()
    return Workload(wl.model, list(wl.batches[:batches]), wl.loss_fn, name="digits CNN (mpq.examples.digits)")


def cached_exact(wl: Workload, names: list[str], use_cache: bool) -> tuple[dict[str, float], float, bool]:
    h = hashlib.sha256(wl.fingerprint().encode())
    for x, y in wl.batches:
        h.update(x.numpy().tobytes())
        h.update(y.numpy().tobytes())
    path = Path(f"/tmp/mpq-trace-accuracy-{h.hexdigest()[:16]}.json")
    if use_cache and path.exists():
        doc = json.loads(path.read_text())
        return doc["traces"], doc["seconds"], True
    t = time.perf_counter()
    traces = exact_traces(wl.model, wl.batches, wl.loss_fn, names)
    secs = time.perf_counter() - t
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"traces": traces, "seconds": secs}))
    tmp.replace(path)
    return traces, secs, False


def pyhessian_layer_samples(wl: Workload, names: list[str], n: int, seed: int) -> torch.Tensor:
    """(layers, n) samples v_l . (H v)_l from PyHessian's whole-model probe and HVP, averaged over batches."""
    from pyhessian import hessian
    from pyhessian.utils import hessian_vector_product

    sizes = [x.shape[0] for x, _ in wl.batches]
    out = torch.zeros(len(names), n, dtype=torch.float64)
    torch.manual_seed(seed)  # PyHessian draws from the global generator
    for (x, y), size in zip(wl.batches, sizes):
        h = hessian(wl.model, wl.loss_fn, data=(x, y), cuda=False)
        where = {id(p): i for i, p in enumerate(h.params)}
        idx = [where[id(wl.model.get_submodule(name).weight)] for name in names]
        for j in range(n):
            v = [torch.randint_like(p, high=2) for p in h.params]
            for vi in v:
                vi[vi == 0] = -1
            hv = hessian_vector_product(h.gradsH, h.params, v)
            for i, k in enumerate(idx):
                out[i, j] += size / sum(sizes) * float((hv[k].double() * v[k].double()).sum())
        clear_grads(wl.model)
    return out


def clear_grads(model: nn.Module) -> None:
    for p in model.parameters():  # PyHessian leaves create_graph gradients on the parameters
        p.grad = None


def pyhessian_seconds_per_hvp(wl: Workload, n: int = 100) -> float:
    from pyhessian import hessian

    x, y = wl.batches[0]
    h = hessian(wl.model, wl.loss_fn, data=(x, y), cuda=False)
    torch.manual_seed(0)
    t = time.perf_counter()
    samples = h.trace(maxIter=n, tol=-math.inf)
    secs = time.perf_counter() - t
    clear_grads(wl.model)
    assert len(samples) == n
    return secs / n


def microbench(wl: Workload, names: list[str], reps: int = 3) -> tuple[float, float]:
    """ms per block HVP (32 batched per layer, averaged over layers' HVPs) and ms per whole-model HVP."""
    model = wl.model
    x, y = wl.batches[0]
    weights = [model.get_submodule(n).weight for n in names]
    params = [p for p in model.parameters() if p.requires_grad]
    best_block = best_whole = math.inf
    for _ in range(reps):
        loss = wl.loss_fn(call_model(model, x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        gw = [grads[[id(p) for p in params].index(id(w))] for w in weights]
        t = time.perf_counter()
        for g, w in zip(gw, weights):
            v = torch.randint(0, 2, (32, *w.shape)).to(w.dtype) * 2 - 1
            torch.autograd.grad(g, w, v, retain_graph=True, is_grads_batched=True)
        best_block = min(best_block, (time.perf_counter() - t) / (32 * len(weights)))
        t = time.perf_counter()
        for _ in range(8):
            v = [torch.randint(0, 2, p.shape).to(p.dtype) * 2 - 1 for p in params]
            torch.autograd.grad(grads, params, v, retain_graph=True)
        best_whole = min(best_whole, (time.perf_counter() - t) / 8)
        del grads, gw, loss
    return 1e3 * best_block, 1e3 * best_whole


def trace_run(wl: Workload, graph, seed: int, **kw):
    t = time.perf_counter()
    table = HessianTraceEstimator(seed=seed, quiet=True, batches=len(wl.batches), **kw).estimate(wl, graph)
    return table, time.perf_counter() - t


def rel(est: float, exact: float) -> float:
    return abs(est - exact) / abs(exact)


def bench_model(wl: Workload, seeds: int, use_cache: bool) -> dict:
    graph = discover(wl)
    names = graph.names
    model = wl.model
    for p in model.parameters():
        p.requires_grad_(True)
    exact, t_exact, cached = cached_exact(wl, names, use_cache)
    nb = len(wl.batches)

    rows: list[tuple[str, int, dict[str, float]]] = []
    for n in BUDGETS:
        k = n // 3
        for label, kw, hvps_per_layer in [
            ("block Hutchinson (mpq)", dict(sketch=0, min_probes=n, max_probes=n), n),
            (f"block Hutch++ (mpq, k={k}, m={n - 2 * k})", dict(sketch=k, min_probes=n - 2 * k, max_probes=n - 2 * k), n),
        ]:
            sq = {name: 0.0 for name in names}
            for s in range(seeds):
                table, _ = trace_run(wl, graph, s, **kw)
                for name in names:
                    assert table.layers[name].hvps == hvps_per_layer * nb, (name, table.layers[name].hvps)
                    sq[name] += rel(table.layers[name].trace, exact[name]) ** 2
            rows.append((label, n, {name: math.sqrt(sq[name] / seeds) for name in names}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
        whole = [pyhessian_layer_samples(wl, names, max(BUDGETS), 1000 + s) for s in range(seeds)]
        py_spv = pyhessian_seconds_per_hvp(wl)
    for n in BUDGETS:
        errs = {name: math.sqrt(sum(rel(float(w[i, :n].mean()), exact[name]) ** 2 for w in whole) / seeds)
                for i, name in enumerate(names)}
        rows.append(("PyHessian whole-model", n, errs))
    rows.sort(key=lambda r: (r[1], r[0]))

    pooled = torch.cat(whole, 1)
    need = {name: (Z95 * float(pooled[i].std()) / (0.05 * abs(exact[name]))) ** 2 for i, name in enumerate(names)}

    default_runs = [trace_run(wl, graph, s) for s in range(seeds)]
    table0, t_mpq = default_runs[0]
    mpq_spv = t_mpq / table0.meta["hvps"]
    worst_default = max(rel(t.layers[name].trace, exact[name]) for t, _ in default_runs for name in names)
    ms_block, ms_whole = microbench(wl, names)
    return dict(wl=wl, graph=graph, names=names, exact=exact, t_exact=t_exact, cached=cached, rows=rows, need=need,
                py_spv=py_spv, mpq_spv=mpq_spv, t_mpq=t_mpq, table0=table0, worst_default=worst_default,
                worst_default_seed0=max(rel(table0.layers[name].trace, exact[name]) for name in names),
                ms_block=ms_block, ms_whole=ms_whole, seeds=seeds)


def report(r: dict) -> None:
    wl, graph, names, exact = r["wl"], r["graph"], r["names"], r["exact"]
    sizes = [int(x.shape[0]) for x, _ in wl.batches]
    print(f"\n== {wl.name}: {sum(graph.layers[n].params for n in names)} weights in {len(names)} layers, "
          f"calibration batches {sizes}")
    src = "cached" if r["cached"] else "computed"
    print(f"exact block traces ({src}; {r['t_exact']:.1f} s to compute, one HVP per weight per batch):")
    for n in names:
        print(f"  {n:14s} {graph.layers[n].params:6d} weights   trace {exact[n]:12.6f}")
    print(f"per-layer relative error vs exact, RMS over {r['seeds']} seeds (%); n = HVPs per layer "
          "(whole-model: n HVPs, each a sample for every layer)")
    head = f"{'method':32s} {'n':>4s}  " + "  ".join(f"{n[-12:]:>12s}" for n in names) + f"  {'max':>7s}"
    print(head)
    print("-" * len(head))
    for label, n, errs in r["rows"]:
        print(f"{label:32s} {n:4d}  " + "  ".join(f"{100 * errs[name]:11.2f}%" for name in names)
              + f"  {100 * max(errs.values()):6.2f}%")
    t0 = r["table0"]
    print(f"mpq default hessian-trace (seed 0): {t0.meta['hvps']} HVPs, {r['t_mpq']:.2f} s, worst layer "
          f"{100 * r['worst_default_seed0']:.2f}% off; worst over {r['seeds']} seeds {100 * r['worst_default']:.2f}%")
    print(f"seconds per HVP: mpq hessian-trace {1e3 * r['mpq_spv']:.2f} ms (end to end), PyHessian trace() "
          f"{1e3 * r['py_spv']:.2f} ms; microbenchmark: block HVP batched 32 {r['ms_block']:.2f} ms, whole-model "
          f"HVP {r['ms_whole']:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="repetitions for the RMS errors (default 5)")
    ap.add_argument("--batches", type=int, default=1, help="calibration batches per model (exact reference cost grows with it)")
    ap.add_argument("--no-cache", action="store_true", help="recompute the exact traces")
    ap.add_argument("--verify-whole", action="store_true",
                    help="also run the estimated number of whole-model PyHessian HVPs on the digits CNN (about 30-40 s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; seeds {args.seeds}")
    results = {}
    for key, make in [("mlp", mlp_workload), ("cnn", digits_workload)]:
        results[key] = bench_model(make(args.batches), args.seeds, not args.no_cache)
        report(results[key])

    cnn = results["cnn"]
    need = cnn["need"]
    n_whole = max(need.values())
    worst_layer = max(need, key=need.get)
    t_whole = n_whole * cnn["py_spv"]
    ratio = t_whole / cnn["t_mpq"]
    met_a = ratio >= 10 and cnn["worst_default"] <= 0.05
    print("\n== goals")
    print("(a) digits CNN, every layer within 5% of its exact trace:")
    print("    whole-model Hutchinson with PyHessian HVPs needs (estimated, n_l = (1.96 s_l / (0.05 |tr_l|))^2): "
          + ", ".join(f"{n} {need[n]:.0f}" for n in cnn["names"]))
    print(f"    -> {n_whole:.0f} HVPs (layer {worst_layer}) x {1e3 * cnn['py_spv']:.2f} ms = {t_whole:.1f} s")
    print(f"    mpq default hessian-trace: {cnn['t_mpq']:.2f} s, {cnn['table0'].meta['hvps']} HVPs, worst layer "
          f"{100 * cnn['worst_default_seed0']:.2f}% (worst over {cnn['seeds']} seeds {100 * cnn['worst_default']:.2f}%)")
    if args.verify_whole:
        n = int(math.ceil(n_whole))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
            t = time.perf_counter()
            samples = pyhessian_layer_samples(cnn["wl"], cnn["names"], n, seed=7)
            t_run = time.perf_counter() - t
        errs = {name: rel(float(samples[i].mean()), cnn["exact"][name]) for i, name in enumerate(cnn["names"])}
        print(f"    check: {n} whole-model PyHessian HVPs (seed 7) took {t_run:.1f} s; per-layer error "
              + ", ".join(f"{name} {100 * e:.2f}%" for name, e in errs.items()))
    print(f"    ratio {ratio:.1f}x (goal >= 10x, every layer <= 5%): {'MET' if met_a else 'MISSED'}")
    print("(b) seconds per HVP no more than PyHessian's on the same model:")
    met_b = True
    for key in ("mlp", "cnn"):
        r = results[key]
        ok = r["mpq_spv"] <= r["py_spv"]
        met_b &= ok
        print(f"    {r['wl'].name}: mpq {1e3 * r['mpq_spv']:.2f} ms, PyHessian {1e3 * r['py_spv']:.2f} ms "
              f"({r['py_spv'] / r['mpq_spv']:.2f}x): {'MET' if ok else 'MISSED'}")
    print(f"    {'MET' if met_b else 'MISSED'}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
