"""``hessian-trace``: per-layer trace of the weight-block Hessian, tr(H_ll), each with its standard error.

What is estimated
    For every quantizable layer *l* the trace of the diagonal block of the loss Hessian that belongs to
    the layer's weight ``W_l`` (the bias is not part of the block). The loss is the mean loss over the
    first ``batches`` calibration batches: the target is ``H = sum_b w_b H_b`` with ``w_b`` the batch's
    share of the samples (``n_b / sum n``), i.e. the plain mean of the per-batch Hessians when the
    batches are equal-sized (and the Hessian of the mean per-sample loss when ``loss_fn`` averages
    over the batch). The table carries, per layer, ``trace``, ``stderr`` (units of the trace),
    ``score = trace / params`` (HAWQ-V2's average curvature, used by the cost model), ``params``,
    ``probes`` (random residual samples drawn), ``sketch`` (size of the exact subspace, see below; equal
    to ``params`` when the block was computed exactly) and ``hvps`` (Hessian-vector products spent).
    A block trace may be negative (non-convex loss); it is reported as measured, never clipped.

Probing scheme: block-restricted probes, deflated (Hutch++ within each block)
    Whole-model Rademacher probes give every layer a sample per HVP, but the cross-layer terms
    ``v_l^T H_lm v_m`` swamp small layers (measured: ~3,000 HVPs for a 5% error on a 144-weight first conv).
    So every probe here is restricted to one layer: ``v`` is non-zero only on ``W_l`` and the sample is
    ``v_l^T (H v)_l``, computed by differentiating ``<grad_l, v_l>`` with respect to ``W_l`` only, which
    is also cheaper than a whole-model HVP because autograd prunes paths that do not reach ``W_l``.

    Plain block Rademacher probes still need ~400-1,800 HVPs per layer for a 2% standard error on a
    trained CNN (single-probe relative std 0.6-0.9 on a digits CNN). Those blocks are nearly low rank,
    so each block is first deflated, as in Hutch++: ``Q_l`` = orthonormal basis of ``H S`` for
    ``k = sketch`` Rademacher columns ``S`` (k HVPs per batch, ``H`` the target mean Hessian),
    ``tr(Q^T H Q)`` is computed exactly (k more HVPs per batch), and only the remainder ``tr(P H P)``,
    ``P = I - Q Q^T``, is probed, with ``u = P v`` for Rademacher ``v``. Since
    ``tr H = tr(Q^T H Q) + tr(P H P)`` for any orthonormal ``Q`` and the residual probes are drawn
    independently of ``Q``, the estimate is unbiased and its standard error is that of the residual
    samples. On that digits CNN the single-probe relative std of the first two convs falls from
    0.89 / 0.75 to 0.025 / 0.073 with k=8 and to 0.001 / 0.007 with k=32, so ``min_probes`` usually
    already meets ``tol``. Blocks with a flat spectrum gain little (a random-init tanh MLP layer with a
    negative trace still took ~1,400 probes) and fall back on adaptive probing. A block of at most
    ``2 * sketch`` weights is computed exactly (unit vectors; ``stderr`` 0, ``probes`` 0).
    ``sketch=0`` gives plain block-restricted Hutchinson.

Samples, several batches and the standard error
    One *sample* of a layer is ``sum_b w_b u_b^T H_b u_b`` with a fresh probe ``u_b`` for every used
    batch, so each sample is unbiased for the target; ``stderr = std(samples, ddof=1) / sqrt(n)``.
    Probe streams are seeded per (seed, layer name, batch), so results are deterministic for a seed
    and a layer's probes do not depend on which other layers are still being probed.

Adaptive stopping
    Every layer first gets ``min_probes`` samples; then only the layers whose relative standard error
    ``stderr / |trace|`` is above ``tol`` get more, ``chunk`` at a time, each stopping independently
    once under ``tol``, or at ``max_probes`` (those are listed in ``meta["layers_at_max"]``). A layer
    whose weight has no second-order path to the loss (unused layer, loss linear in it) gets
    trace 0, stderr 0 and no probes.

Defaults and what they give
    ``tol=0.02, min_probes=32, max_probes=2000, sketch=16, chunk=32, batches=4``; ``probes=N`` (the
    CLI's ``--probes``) sets the per-layer budget: ``max_probes=N`` and ``min_probes<=N``. On the embedded
    digits CNN (47.5k params, 2 calibration batches of 64): 640 HVPs, 1.3-2.6 s with one thread.
    Over 30 seeds on its first batch, against exact traces: worst layer error 1.2% (rms 0.05-0.5%),
    error / stderr has rms 0.9-1.1 per layer, worst 3.4. On the tiny test MLP and CNN, 40 seeds:
    worst error 4.0% (the negative-trace layer) and worst 3.3 standard errors.

Batching the probes (1 thread, torch 2.13 CPU, batch of 64, ms per HVP, best of 5; two runs on a
shared 2-core box, so a range)
    The per-layer call ``torch.autograd.grad(grad_l, W_l, grad_outputs=V, is_grads_batched=True)`` over
    ``V`` stacking 32 block probes ("batched"), against one probe per call ("loop") and against
    ``torch.func`` (``functional_call``, ``jvp`` of ``grad`` restricted to ``W_l``, vmapped over the
    32 probes), per layer, and summed over the layers (one probe in every layer):

    ==============  =====================  =====================  =====================
    layer           batched                loop                   func + vmap
    ==============  =====================  =====================  =====================
    digits CNN      3.7-4.6, 2.6-2.8,      3.2-3.3, 2.4-2.9,      2.7-3.2, 2.2-6.2,
    (47.5k params)  0.8-1.1, 0.14, 0.02    0.9-1.3, 0.28-0.38,    1.1-1.2, 0.28-0.46,
                                           0.09-0.10              0.12-0.19
    sum             7.5-8.3                6.9-7.9                6.5-11.1
    MLP 64-256-     0.34-0.47, 0.34-0.36,  0.45-0.76, 0.41-0.42,  0.46-0.75, 0.43-0.52,
    256-10 (85k)    0.02                   0.10-0.11              0.08-0.10
    sum             0.70-0.86              0.96-1.29              0.97-1.37
    ==============  =====================  =====================  =====================

    One whole-model batched call over every layer's stacked block probes (zeros outside the block)
    cost 39-53 / 4.0-9.8 ms per probe-in-every-layer (each row pays for a whole-model HVP);
    ``torch.func`` without vmap 31-39 / 7.3-12 ms; one whole-model HVP (a sample for every layer, with
    cross terms) 5.3-7.4 / 1.0-1.1 ms. The convs are compute-bound: for them the three ways are
    within the noise of the box; the linears gain 1.3-7x from batching. Hence the per-layer
    ``is_grads_batched`` call: fastest on the MLP, tied on the CNN, and it needs no functional rewrite
    of the model (keyword inputs, buffers, tied weights work as they are). Choosing per layer by timing
    was not done, since batched and looped HVPs round differently and results must not depend on
    timing. Chunks have a fixed size because every new batch shape pays a one-off kernel warm-up. If an
    op has no batching rule, the estimator falls back to one probe per call (``meta["batched_hvp"]``
    is then false). Only the blocks still being probed are differentiated in each round.

    Threads: on this shared 2-core box, torch's default of 2 intra-op threads made a digits run 5-10x
    slower (10-21 s against 1.3-2.6 s with one thread; other processes were using the cores).
    ``threads=1`` sets torch's thread count for the run only (restored after; results are identical).

Attention: fused attention kernels have no double backward, so the model runs with attention that has
one while the estimator runs (:func:`second_order_attention`: PyTorch's math kernel, and eager attention
for Hugging Face models), restored exactly afterwards.

Embeddings: an input embedding (``nn.Embedding`` whose weight no other module uses) is not probed. Its
block is as large as the vocabulary (30k x 384 on a small encoder: one probe per HVP, no sketch), every
HVP runs the double backward through the whole model, and the loss touches only the rows of the tokens
the calibration data contains; probing it took more than 900 s and 6 GB on all-MiniLM-L6-v2. Its trace
is a weight-error proxy instead: the probed layers' mean curvature per weight (their summed traces over
their summed weights) times the share of its rows the calibration batches use (an unused row has no
curvature at all), so an option's distortion is that curvature times ``||Q(W) - W||^2`` like every
other layer's. Those layers are listed in ``meta["proxy_layers"]``, carry ``rows_used`` (that share)
and no ``stderr`` or probes. ``embeddings="probe"`` probes them like any other layer.

Memory: the double-backward graph of one batch is alive at a time (rebuilt per batch and round, a few
ms); probe stacks are capped at ``2**24`` elements per call, and a block is deflated only when its
sketch fits in ``2**24`` elements.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping, Optional

import torch
from pydantic import Field, Strict, model_validator

from mpq.errors import WorkloadError
from mpq.settings import Count, NonNegInt, PosReal
from mpq.graph import LayerGraph, _batch_size
from mpq.quant import QuantSpec
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Workload, call_model, check_loss

from ._runtime import check_device, second_order_attention
from .base import DeviceOrAuto, Estimator, EstimatorSettings, check_finite_scores, register_estimator

#: Most elements in one stacked probe tensor (and in one layer's sketch basis).
ELEMENT_BUDGET = 1 << 24


@dataclass(eq=False)
class _Block:
    """One distinct weight tensor (tied layers share a block) and its running estimate."""

    names: list[str]
    weight: torch.Tensor
    index: int
    d: int
    k: int = 0  # sketch size; == d when the block is computed exactly
    chunk: int = 1
    exact: bool = False
    q: Optional[torch.Tensor] = None  # (k, d) orthonormal rows
    exact_part: float = 0.0
    samples: list[torch.Tensor] = field(default_factory=list)
    n: int = 0
    hvps: int = 0
    reached: bool = False  # some HVP actually depended on the weight
    done: bool = False
    at_max: bool = False

    def values(self) -> torch.Tensor:
        return torch.cat(self.samples) if self.samples else torch.zeros(0, dtype=torch.float64)

    def mean_stderr(self) -> tuple[float, float]:
        s = self.values()
        if s.numel() == 0:
            return self.exact_part, 0.0
        mean = self.exact_part + float(s.mean())
        se = float(s.std(unbiased=True)) / math.sqrt(s.numel()) if s.numel() > 1 else math.inf
        return mean, se


def _seed(*parts: Any) -> int:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _rademacher(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    v = torch.randint(0, 2, shape, generator=gen, dtype=torch.int8)
    return (v.to(dtype=dtype) * 2 - 1).to(device)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


class BlockHVP:
    """What ``hessian-trace`` and ``hessian-eigen`` share: weight blocks, per-batch gradients with their
    graph, block-restricted Hessian-vector products, and leaving the model as it was."""

    name: str
    seed: int
    device: str
    batches: int
    threads: Optional[int] = None
    _batched_ok: bool = True

    @contextlib.contextmanager
    def _session(self, workload: Workload, graph: LayerGraph):
        """Yields ``(blocks, batches, batch weights, batch sizes, device)`` with the block weights requiring
        grad; afterwards the thread count, ``requires_grad`` flags, device and buffers are put back."""
        model = workload.model
        params = list(model.parameters())
        original_device = params[0].device if params else torch.device("cpu")
        device = original_device if self.device == "auto" else check_device(self.device)
        moved = any(p.device != device for p in params)
        used = list(workload.batches[: self.batches])
        sizes = [max(_batch_size(x), 1) for x, _ in used]
        weights_b = [s / sum(sizes) for s in sizes]
        # a forward pass in training mode may update buffers (BatchNorm statistics): put them back after
        saved_buffers = {n: buf.detach().clone() for n, buf in model.named_buffers()}
        flags: list[tuple[torch.Tensor, bool]] = []
        threads_before = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            if moved:
                model.to(device)
            blocks = self._blocks(graph)
            flags = [(b.weight, b.weight.requires_grad) for b in blocks]
            for b in blocks:
                b.weight.requires_grad_(True)
            batches = [(_to(x, device), _to(y, device)) for x, y in used]
            with torch.enable_grad(), second_order_attention(model):
                yield blocks, batches, weights_b, sizes, device
        finally:
            torch.set_num_threads(threads_before)
            for w, flag in flags:
                w.requires_grad_(flag)
            if moved:
                model.to(original_device)
            with torch.no_grad():
                for n, buf in model.named_buffers():
                    if n in saved_buffers and buf.shape == saved_buffers[n].shape:
                        buf.copy_(saved_buffers[n].to(buf.device))

    def _blocks(self, graph: LayerGraph) -> list[_Block]:
        """One block per distinct weight tensor, in graph order (tied layers share one)."""
        blocks: list[_Block] = []
        by_id: dict[int, _Block] = {}
        for name in graph.names:
            if name in getattr(self, "_excluded", ()):
                continue
            w = graph.module(name).weight
            if not isinstance(w, torch.Tensor) or not w.is_leaf:
                raise WorkloadError(
                    f"{self.name}: layer {name!r} has a weight that is not a leaf tensor "
                    "(a parametrization or a computed weight); its Hessian block is not defined here"
                )
            if id(w) in by_id:  # tied weights: one block, reported under every layer that uses it
                by_id[id(w)].names.append(name)
                continue
            blk = _Block(names=[name], weight=w, index=len(blocks), d=w.numel())
            self._setup_block(blk)
            by_id[id(w)] = blk
            blocks.append(blk)
        return blocks

    def _setup_block(self, blk: _Block) -> None:
        """Per-estimator sizes of a new block (chunk, sketch)."""

    def _grads(self, workload: Workload, blocks: list[_Block], batch: tuple[Any, Any], index: int) -> dict:
        """Gradients of one batch's loss w.r.t. the given blocks' weights, with their graph (block index -> grad)."""
        inputs, targets = batch
        loss = workload.loss_fn(call_model(workload.model, inputs), targets)
        try:
            check_loss(loss.detach() if isinstance(loss, torch.Tensor) else loss, workload.name)
            loss = loss.reshape(())
        except WorkloadError as e:
            raise WorkloadError(f"{self.name}: calibration batch {index}: {e}") from None
        if not loss.requires_grad:
            raise WorkloadError(
                f"{self.name}: calibration batch {index}: the loss of workload {workload.name!r} has no autograd "
                "graph to the weights (loss_fn or the model detaches it, or runs under torch.no_grad)"
            )
        try:
            grads = torch.autograd.grad(loss, [b.weight for b in blocks], create_graph=True, allow_unused=True)
        except RuntimeError as e:
            raise WorkloadError(f"{self.name}: cannot differentiate the loss of calibration batch {index}: {e}") from e
        return {b.index: g for b, g in zip(blocks, grads)}

    def _hvp(self, grad: Optional[torch.Tensor], weight: torch.Tensor, rows: torch.Tensor) -> Optional[torch.Tensor]:
        """``rows[i] -> (H rows[i])`` restricted to this block; None when the block has no second-order path."""
        if grad is None or not grad.requires_grad:
            return None
        try:
            if rows.shape[0] > 1 and self._batched_ok:
                try:
                    (hv,) = torch.autograd.grad(grad, weight, rows, retain_graph=True, allow_unused=True, is_grads_batched=True)
                    return hv
                except RuntimeError:
                    self._batched_ok = False  # an op without a batching rule: one probe per call from now on
            out = []
            for r in rows:
                (hv,) = torch.autograd.grad(grad, weight, r, retain_graph=True, allow_unused=True)
                if hv is None:
                    return None
                out.append(hv)
            return torch.stack(out)
        except RuntimeError as e:
            raise WorkloadError(f"{self.name}: the model does not support second derivatives (double backward): {e}") from e

def input_embeddings(model: torch.nn.Module, graph: LayerGraph) -> list[str]:
    """The planned ``nn.Embedding`` layers whose weight no other module of the model uses (not tied to a head)."""
    users: dict[int, int] = {}
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor):
            users[id(w)] = users.get(id(w), 0) + 1
    return [n for n in graph.names if isinstance(graph.module(n), torch.nn.Embedding) and users.get(id(graph.module(n).weight), 0) == 1]


@register_estimator
class HessianTraceEstimator(BlockHVP, Estimator):
    """Per-layer weight-block Hessian traces by deflated block-restricted Hutchinson probing."""

    name = "hessian-trace"

    class Settings(EstimatorSettings):
        tol: PosReal = Field(0.02, description="stop probing a layer at this relative standard error")
        min_probes: Annotated[int, Strict(), Field(ge=2)] = Field(32, description="probes per layer before the stopping test "
                                                                  "(a standard error needs two)")
        max_probes: Annotated[int, Strict(), Field(ge=2)] = Field(2000, description="probe budget per layer")
        probes: Optional[Annotated[int, Strict(), Field(ge=2)]] = Field(
            None, description="the CLI's --probes: sets max_probes (and caps min_probes)")
        batches: Count = Field(4, description="calibration batches per Hessian-vector product")
        sketch: NonNegInt = Field(16, description="top eigenvectors deflated before probing (0: off)")
        chunk: Count = Field(32, description="probe vectors per batched Hessian-vector product")
        device: DeviceOrAuto = Field("auto", description="cpu, cuda[:N], or auto (where the model is)")
        threads: Optional[Count] = Field(None, description="torch intra-op threads while estimating")
        embeddings: Literal["proxy", "probe"] = Field("proxy", description="input embeddings: the probed layers' mean "
                                                      "curvature x the share of rows used (proxy), or probed")

        outside_result = EstimatorSettings.outside_result | {"probes"}

        @model_validator(mode="after")
        def _probe_budget(self):
            if self.probes is not None:
                self.max_probes, self.min_probes = self.probes, min(self.min_probes, self.probes)
            if self.max_probes < self.min_probes:
                raise ValueError(f"max_probes ({self.max_probes}) must be at least min_probes ({self.min_probes})")
            return self

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self._batched_ok = True

    # ------------------------------------------------------------------------------------------
    def estimate(
        self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None
    ) -> SensitivityTable:
        self._started = time.perf_counter()
        counters = {"hvps": 0}
        from mpq.console import bar as progress_bar

        bar = progress_bar(desc="hessian-trace", unit="HVP", quiet=self.quiet)
        proxied = input_embeddings(workload.model, graph) if self.embeddings == "proxy" else []
        rows: dict[str, set] = {n: set() for n in proxied}

        def seen(name):
            def record(mod, args, out):
                if args and isinstance(args[0], torch.Tensor):
                    rows[name].update(torch.unique(args[0]).tolist())
            return record

        hooks = [graph.module(n).register_forward_hook(seen(n)) for n in proxied]
        self._excluded = set(proxied)
        try:
            with self._session(workload, graph) as (blocks, batches, weights_b, sizes, device):
                self._run(workload, blocks, batches, weights_b, device, bar, counters)
        finally:
            self._excluded = set()
            for h in hooks:
                h.remove()
            bar.close()

        layers: dict[str, LayerSensitivity] = {}
        by_name = {n: b for b in blocks for n in b.names}
        probed = [by_name[n].mean_stderr()[0] if by_name[n].reached else 0.0 for n in graph.names if n in by_name]
        curvature = sum(probed) / max(sum(graph.layers[n].params for n in graph.names if n in by_name), 1)
        for name in proxied:
            info, share = graph.layers[name], len(rows[name]) / max(graph.module(name).weight.shape[0], 1)
            layers[name] = LayerSensitivity(score=curvature * share, params=info.params, trace=curvature * share * info.params,
                                            probes=0, sketch=0, hvps=0, rows_used=share)
        for name, info in graph.layers.items():
            if name in layers:
                continue
            b = by_name[name]
            trace, se = b.mean_stderr()
            if not b.reached:
                trace, se = 0.0, 0.0
            if b.exact:
                se = 0.0
            layers[name] = LayerSensitivity(
                score=trace / info.params if info.params else 0.0,
                params=info.params,
                stderr=se,
                trace=trace,
                probes=b.n,
                sketch=b.k,
                hvps=b.hvps,
            )
        scheme = "block-hutch++" if self.sketch > 0 else "block-hutchinson"
        meta = {
            "scheme": scheme,
            "probes": sum(b.n for b in blocks),
            "hvps": counters["hvps"],
            "batches": len(batches),
            "batch_sizes": sizes,
            "tol": self.tol,
            "layers_at_max": [n for b in blocks if b.at_max for n in b.names],
            "target": "Hessian of the sample-weighted mean loss over the used batches (weights n_b / sum n)",
            "batched_hvp": self._batched_ok,
        }
        if proxied:
            meta["proxy_layers"] = proxied
            meta["proxy"] = "input embeddings: the probed layers' mean curvature per weight x the share of rows the calibration data uses"
        layers = {n: layers[n] for n in graph.layers}
        return check_finite_scores(self.table(workload, layers, **meta))

    # ------------------------------------------------------------------------------------------
    def _setup_block(self, blk: _Block) -> None:
        d = blk.d
        blk.chunk = max(1, min(self.chunk, ELEMENT_BUDGET // max(d, 1)))
        if self.sketch > 0 and d <= 2 * self.sketch:
            blk.exact, blk.k = True, d
        elif self.sketch > 0 and d * self.sketch <= ELEMENT_BUDGET:
            blk.k = min(self.sketch, d)

    def _run(self, workload, blocks, batches, wb, device, bar, counters) -> None:
        def hvp(grads, blk, rows):
            hv = self._hvp(grads[blk.index], blk.weight, rows.view(rows.shape[0], *blk.weight.shape))
            counters["hvps"] += rows.shape[0]
            blk.hvps += rows.shape[0]
            bar.update(rows.shape[0])
            if hv is None:
                return None
            blk.reached = True
            return hv.reshape(rows.shape[0], -1)

        first = [b.names[0] for b in blocks]
        dtype_of = {b.index: b.weight.dtype for b in blocks}
        # 1. sketch: Y = H S for the mean Hessian; Q = orth(Y)
        sketched = [b for b in blocks if b.k and not b.exact]
        if sketched:
            ys = {b.index: torch.zeros(b.k, b.d, dtype=torch.float64, device=device) for b in sketched}
            ss = {}
            for b in sketched:
                g = torch.Generator().manual_seed(_seed(self.seed, first[b.index], "sketch"))
                ss[b.index] = _rademacher(g, (b.k, b.d), dtype_of[b.index], device)
            for bi, batch in enumerate(batches):
                grads = self._grads(workload, sketched, batch, bi)
                for b in sketched:
                    for s0 in range(0, b.k, b.chunk):
                        hv = hvp(grads, b, ss[b.index][s0 : s0 + b.chunk])
                        if hv is not None:
                            ys[b.index][s0 : s0 + b.chunk] += wb[bi] * hv.double()
                del grads
            for b in sketched:
                if b.reached:
                    q, _ = torch.linalg.qr(ys[b.index].T)  # (d, k), orthonormal columns
                    b.q = q.T.contiguous().to(dtype_of[b.index])
            del ys, ss
        # 2. rounds: round 0 also computes tr(Q^T H Q) (or the whole trace of an exact block)
        gens = {(b.index, bi): torch.Generator().manual_seed(_seed(self.seed, first[b.index], "probe", bi))
                for b in blocks for bi in range(len(batches))}
        for b in sketched:
            if not b.reached:
                b.done = True  # no second-order path in any batch: trace 0
        rnd = 0
        while True:
            active = [b for b in blocks if not b.done and not b.exact]
            basis = [b for b in blocks if rnd == 0 and (b.exact or b.q is not None)]
            if not active and not basis:
                break
            take = {b.index: min(b.chunk, self.max_probes - b.n, self.min_probes - b.n if b.n < self.min_probes else b.chunk)
                    for b in active}
            acc = {b.index: torch.zeros(take[b.index], dtype=torch.float64) for b in active}
            for bi, batch in enumerate(batches):
                # only the blocks still probed: autograd then skips paths that reach none of them
                grads = self._grads(workload, basis + [b for b in active if all(b is not c for c in basis)], batch, bi)
                for b in basis:
                    for s0 in range(0, b.k, b.chunk):
                        m = min(b.chunk, b.k - s0)
                        if b.exact:
                            rows = torch.zeros(m, b.d, dtype=dtype_of[b.index], device=device)
                            rows[torch.arange(m), torch.arange(s0, s0 + m)] = 1
                        else:
                            rows = b.q[s0 : s0 + m]
                        hv = hvp(grads, b, rows)
                        if hv is not None:
                            b.exact_part += wb[bi] * float((rows.double() * hv.double()).sum())
                for b in active:
                    v = _rademacher(gens[(b.index, bi)], (take[b.index], b.d), dtype_of[b.index], device)
                    if b.q is not None:
                        v = v - (v @ b.q.T) @ b.q
                    hv = hvp(grads, b, v)
                    if hv is not None:
                        acc[b.index] += wb[bi] * (v.double() * hv.double()).sum(1).cpu()
                del grads
            for b in blocks:
                if b.exact and rnd == 0:
                    b.done = True
            for b in active:
                b.samples.append(acc[b.index])
                b.n += take[b.index]
                if not b.reached and rnd == 0 and b.q is None:
                    b.done = True  # never reached in any batch: structurally zero, no probes counted
                    b.n, b.samples = 0, []
                    continue
                if b.n < self.min_probes:
                    continue
                mean, se = b.mean_stderr()
                if se <= self.tol * abs(mean):
                    b.done = True
                elif b.n >= self.max_probes:
                    b.done = b.at_max = True
            bar.set_postfix(active=sum(not b.done for b in blocks))
            rnd += 1
