"""Per-layer Hessian traces on a small CNN: whole-model Hutchinson against block-restricted probing.

    .venv/bin/python benchmarks/trace_probing.py [--threads 1] [--seed 0] [--batches 1] [--whole 320,1280] [--full]

The model is the embedded digits CNN (``mpq.examples.digits:workload``; first conv has 144 weights).
When its committed weights are missing, the same CNN is trained in memory for a few epochs on the
digits training split (about a second); if the digits example itself is unavailable, a CNN of the
same shape with random weights on random 8x8 images is used. The reference is the exact trace of
every weight block, one HVP per weight coordinate, for the mean loss over the calibration batches.

Schemes (an HVP is one Hessian-vector product on one calibration batch):

* ``whole-model``: Rademacher probe on all quantizable weights at once; each layer's sample is
  ``v_l . (H v)_l``, so every HVP feeds every layer but carries the cross-layer terms.
* ``block``: the ``hessian-trace`` estimator with ``sketch=0`` (probes restricted to one layer's block),
  with a fixed budget of 32 samples per layer, and (``--full``) adaptive to a 2% relative standard error.
* ``block-hutch++``: the ``hessian-trace`` estimator's default (block probes, each block deflated by
  an exact 16-dimensional subspace first), adaptive to 2%.

Prints, per scheme, the HVPs spent, the seconds, and each layer's relative error against the exact
trace and the error in units of the standard error (for whole-model Hutchinson, the standard error of
its own samples). The exact reference dominates the run time (one HVP per weight, ~47k per batch), so
by default one calibration batch is used: about a minute on an idle 2-core machine, ``--full``
(adaptive plain block probing, a 5,120-HVP whole-model run) adds about a minute.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from mpq.graph import discover
from mpq.sensitivity.hessian import HessianTraceEstimator
from mpq.workload import Workload, call_model


def _train_digits(seconds_note: list[str]) -> Workload:
    from mpq.examples.digits import DigitsCNN, evaluate_on, load_data

    torch.manual_seed(0)
    data = load_data()
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = data.train
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(10):
        order = torch.randperm(len(ys), generator=gen)
        for i in range(0, len(ys), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
            opt.step()
    model.eval()
    acc = evaluate_on(model, data.test)["accuracy"]
    seconds_note.append(f"digits CNN trained in memory for 10 epochs ({time.perf_counter() - t:.1f} s, test accuracy {acc:.3f})")
    xc, yc = data.calib
    batches = [(xc[i : i + 64], yc[i : i + 64]) for i in range(0, len(yc), 64)]
    return Workload(model, batches, nn.functional.cross_entropy, name="digits-cnn (trained here)")


def _random_cnn(notes: list[str]) -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(2)]
    notes.append("digits example unavailable: CNN of the same shape with random weights on random images")
    return Workload(model, batches, nn.functional.cross_entropy, name="random-cnn")


def load(notes: list[str]) -> Workload:
    try:
        from mpq.examples.digits import workload

        wl = workload()
        notes.append("embedded digits CNN (mpq.examples.digits:workload, committed weights)")
        return wl
    except Exception as e:  # weights not committed yet, or the example missing
        notes.append(f"mpq.examples.digits:workload not usable ({type(e).__name__}: {str(e)[:80]})")
    try:
        return _train_digits(notes)
    except Exception as e:
        notes.append(f"digits training failed ({type(e).__name__})")
        return _random_cnn(notes)


def batch_weights(batches) -> list[float]:
    sizes = [int(x.shape[0]) for x, _ in batches]
    return [s / sum(sizes) for s in sizes]


def exact_traces(model, batches, loss_fn, names, chunk=256) -> dict[str, float]:
    weights = [model.get_submodule(n).weight for n in names]
    traces = {n: 0.0 for n in names}
    for wb, (x, y) in zip(batch_weights(batches), batches):
        grads = torch.autograd.grad(loss_fn(call_model(model, x), y), weights, create_graph=True)
        for n, w, g in zip(names, weights, grads):
            d = w.numel()
            buf = torch.zeros(min(chunk, d), d)  # reused: unit vectors e_s .. e_{s+m-1}
            for s in range(0, d, chunk):
                m = min(chunk, d - s)
                rows = buf[:m]
                rows.zero_()
                rows[torch.arange(m), torch.arange(s, s + m)] = 1
                (hv,) = torch.autograd.grad(g, w, rows.view(m, *w.shape), retain_graph=True, is_grads_batched=True)
                traces[n] += wb * float(hv.reshape(m, d)[torch.arange(m), torch.arange(s, s + m)].double().sum())
    return traces


def whole_model_hutchinson(model, batches, loss_fn, names, hvps: int, seed: int) -> tuple[dict, dict]:
    """Each sample: fresh whole-model Rademacher probe per batch; ``v_l . (H v)_l`` averaged over batches."""
    weights = [model.get_submodule(n).weight for n in names]
    gen = torch.Generator().manual_seed(seed)
    nb = len(batches)
    samples = hvps // nb
    sums = torch.zeros(len(names), samples, dtype=torch.float64)
    for bi, (wb, (x, y)) in enumerate(zip(batch_weights(batches), batches)):
        grads = torch.autograd.grad(loss_fn(call_model(model, x), y), weights, create_graph=True)
        for j in range(samples):
            v = [torch.randint(0, 2, w.shape, generator=gen).to(w.dtype) * 2 - 1 for w in weights]
            hv = torch.autograd.grad(grads, weights, v, retain_graph=True)
            for i, (a, b) in enumerate(zip(v, hv)):
                sums[i, j] += wb * float((a.double() * b.double()).sum())
    mean = {n: float(sums[i].mean()) for i, n in enumerate(names)}
    stderr = {n: float(sums[i].std() / math.sqrt(samples)) for i, n in enumerate(names)}
    return mean, stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared 2-core box)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=1, help="calibration batches to use (the exact reference costs one HVP per weight per batch)")
    ap.add_argument("--whole", default="320,1280", help="HVP budgets for whole-model Hutchinson")
    ap.add_argument("--full", action="store_true", help="also run adaptive plain block probing and a 5,120-HVP whole-model run")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    notes: list[str] = []
    started = time.perf_counter()
    wl = load(notes)
    model, loss_fn = wl.model, wl.loss_fn
    graph = discover(wl)
    names = graph.names
    batches = list(wl.batches[: args.batches])
    for p in model.parameters():
        p.requires_grad_(True)

    t = time.perf_counter()
    exact = exact_traces(model, batches, loss_fn, names)
    t_exact = time.perf_counter() - t

    rows: list[tuple[str, int, float, dict[str, float], dict[str, float]]] = []
    budgets = [int(s) for s in args.whole.split(",") if s] + ([5120] if args.full else [])
    for n_hvp in budgets:
        t = time.perf_counter()
        est, se = whole_model_hutchinson(model, batches, loss_fn, names, n_hvp, args.seed)
        z = {n: abs(est[n] - exact[n]) / se[n] if se[n] > 0 else 0.0 for n in names}
        rows.append(("whole-model Hutchinson", n_hvp, time.perf_counter() - t, est, z))

    settings = [("block, fixed 32 samples/layer", dict(sketch=0, min_probes=32, max_probes=32))]
    if args.full:
        settings.append(("block, adaptive tol 2%", dict(sketch=0)))
    settings.append(("block-hutch++ (default), tol 2%", dict()))
    wl_used = Workload(model, batches, loss_fn, name=wl.name)
    for label, kw in settings:
        t = time.perf_counter()
        table = HessianTraceEstimator(seed=args.seed, quiet=True, batches=len(batches), **kw).estimate(wl_used, graph)
        secs = time.perf_counter() - t
        est = {n: table.layers[n].trace for n in names}
        z = {n: (abs(est[n] - exact[n]) / table.layers[n].stderr if table.layers[n].stderr > 0 else 0.0) for n in names}
        rows.append((label, int(table.meta["hvps"]), secs, est, z))

    print(f"model: {wl.name}; {'; '.join(notes)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {len(batches)} calibration batches of "
          f"{[int(x.shape[0]) for x, _ in batches]}; seed {args.seed}")
    print(f"exact block traces ({t_exact:.1f} s, {sum(graph.layers[n].params for n in names) * len(batches)} HVPs):")
    for n in names:
        print(f"  {n:14s} {graph.layers[n].params:6d} weights   trace {exact[n]:11.5f}")
    head = f"{'scheme':34s} {'HVPs':>6s} {'seconds':>8s}  " + "  ".join(f"{n:>14s}" for n in names) + "   max"
    print("\nrelative error vs exact, per layer (|z| = error / reported stderr)")
    print(head)
    print("-" * len(head))
    for label, hvps, secs, est, z in rows:
        rel = {n: abs(est[n] - exact[n]) / abs(exact[n]) if exact[n] else abs(est[n]) for n in names}
        cells = []
        for n in names:
            cells.append(f"{f'{100 * rel[n]:6.2f}% z{z[n]:4.1f}':>14s}")
        print(f"{label:34s} {hvps:6d} {secs:8.2f}  " + "  ".join(cells) + f"  {100 * max(rel.values()):5.2f}%")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
