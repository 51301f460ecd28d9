"""``hessian-eigen`` (HAWQ): the top eigenvalue of every layer's weight-block Hessian H_ll.

What is estimated
    For every quantizable layer *l* the largest *algebraic* eigenvalue ``lambda_max(H_ll)`` of the
    diagonal block of the loss Hessian that belongs to the layer's weight (bias excluded), for the same
    target as ``hessian-trace``: the Hessian of the sample-weighted mean loss over the first
    ``batches`` calibration batches. Largest algebraic, not largest in magnitude, because it is what
    bounds the loss increase: ``dW^T H_ll dW <= lambda_max ||dW||^2`` for every perturbation ``dW``;
    a negative eigenvalue of larger magnitude would make a distortion negative. HAWQ's power iteration
    returns the largest-magnitude one, which is the same number near a minimum (H_ll nearly PSD); here
    the iteration is shifted when negative curvature shows up (see below), so the two differ only
    where HAWQ's would have given a meaningless negative sensitivity.

    Per layer: ``eigenvalue``; ``residual`` = ``||H_ll x - lambda x||`` for the returned unit Ritz
    vector ``x``, in the eigenvalue's units: some eigenvalue of H_ll lies within ``residual`` of
    ``eigenvalue`` (and within ``residual**2 / gap`` when the rest of the spectrum is ``gap`` away),
    so it is a guaranteed error bar, not a standard error (``stderr`` is left empty); ``iterations``;
    ``hvps``; ``block`` (vectors iterated together); ``params``; and ``score = eigenvalue / params``.

Why ``score = eigenvalue / params`` (HAWQ-V1's ordering)
    The cost model predicts ``score * ||Q(W) - W||^2``. ``lambda_max * ||dW||^2`` is the worst case
    of ``dW^T H_ll dW`` over all error directions; rounding errors are spread over the whole block,
    so that bound overstates large layers by about their size, and on the digits CNN its layer
    ordering ran opposite to the measured 3-bit loss increase (Spearman -0.9, against +0.9 with
    ``lambda / params``; ``benchmarks/estimator_agreement.py``). ``lambda / params`` puts the score on
    the same per-weight scale as ``hessian-trace``'s ``trace / params`` (which it bounds from above
    on a PSD block: ``lambda >= trace / params``), so the two tables are interchangeable in a plan.

Method: block power iteration (subspace iteration with Rayleigh-Ritz) on block-restricted HVPs
    Every vector is zero outside the layer's weight, so each product is ``H_ll X`` exactly; a
    whole-model HVP would add the cross-layer blocks ``H_ml``. For each layer, ``X`` holds ``block``
    orthonormal vectors (seeded Rademacher start per seed and layer name); one iteration computes
    ``Y = H X`` with one batched call per calibration batch
    (``torch.autograd.grad(grad_l, W_l, grad_outputs=X, is_grads_batched=True)``), takes the Ritz
    values of ``X^T Y``, and stops the layer when the top Ritz pair's ``residual <= tol * |eigenvalue|``
    (or at ``max_iter``: listed in ``meta["layers_not_converged"]``); otherwise ``X = orth(Y - s X)``.
    The shift ``s`` is 0 until a Ritz value is negative, then the smallest one seen: the iteration
    then runs on ``H - s I``, whose dominant eigenvalue is ``lambda_max - s``, so the largest algebraic
    eigenvalue is found even where negative curvature dominates. ``block=1`` is HAWQ's plain power
    iteration. A block of at most ``block`` weights is solved exactly in one iteration.
    Several vectors per layer converge at the rate ``lambda_{k+1} / lambda_1`` instead of
    ``lambda_2 / lambda_1`` and ride in one batched autograd call. Layers are not batched together:
    one whole-model call over every layer's stacked block vectors pays a whole-model HVP per row,
    5-7x the per-layer batched calls on the digits CNN and 5-14x on an 85k MLP (``hessian.py``).

Measured (one thread, torch 2.13 CPU, shared 2-core box; best of 2-3 runs; error against a
block=8, 300-400-iteration reference)
    ==========================  ======  =======  ======  =======
    default tol 1e-3            block   seconds  HVPs    max err
    ==========================  ======  =======  ======  =======
    digits CNN (47.5k params,   1       0.37     142     7e-6
    2 batches of 64)            4       0.34     224     1e-6
                                8       0.57     304     3e-7
    MLP 64-256-256-10 (85k,     1       0.43     358     3e-5 (first layer not converged at 100)
    trained; 2 batches of 64)   4       0.30     536     2e-5
                                8       0.35     624     1e-5
    ==========================  ======  =======  ======  =======

    ``tol=1e-2`` halves the digits time (0.20-0.25 s) with errors of 1e-4 to 7e-4. On the tiny test CNN
    the last layer's top eigenvalues are nearly degenerate: ``block=1`` stopped at 100 iterations
    5e-3 off, ``block=4`` converged in 3. Hence ``block=4``: as fast as plain power iteration on the CNN
    (its convs are compute-bound, so 4 vectors cost 4 HVPs), faster on the MLP (batched linears), and
    robust to clustered top eigenvalues.

Settings: ``tol`` (relative residual), ``max_iter`` (the CLI's ``--probes``), ``block``, ``batches``,
``seed``, ``device``, ``quiet``, ``threads`` (as in ``hessian-trace``). Deterministic for a seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from pydantic import Field, model_validator

from mpq.graph import LayerGraph
from mpq.quant import QuantSpec
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.settings import Count, PosReal
from mpq.workload import Workload

from .base import DeviceOrAuto, Estimator, EstimatorSettings, check_finite_scores, register_estimator
from .hessian import ELEMENT_BUDGET, BlockHVP, _Block, _rademacher, _seed


@dataclass(eq=False)
class _Iterate:
    """One block's power-iteration state."""

    x: torch.Tensor  # (k, d) float64, orthonormal rows
    shift: float = 0.0
    eigenvalue: float = 0.0
    residual: float = 0.0
    iterations: int = 0


@register_estimator
class HessianEigenEstimator(BlockHVP, Estimator):
    """Per-layer top eigenvalue of the weight-block Hessian (HAWQ) by block power iteration."""

    name = "hessian-eigen"

    class Settings(EstimatorSettings):
        tol: PosReal = Field(1e-3, description="stop at this relative residual")
        max_iter: Count = Field(100, description="power iterations per layer")
        probes: Optional[Count] = Field(None, description="the CLI's --probes: sets max_iter")
        block: Count = Field(4, description="vectors iterated together")
        batches: Count = Field(4, description="calibration batches per Hessian-vector product")
        device: DeviceOrAuto = Field("auto", description="cpu, cuda[:N], or auto (where the model is)")
        threads: Optional[Count] = Field(None, description="torch intra-op threads while estimating")

        outside_result = EstimatorSettings.outside_result | {"probes"}

        @model_validator(mode="after")
        def _iteration_budget(self):
            if self.probes is not None:
                self.max_iter = self.probes
            return self

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self._batched_ok = True

    def _setup_block(self, blk: _Block) -> None:
        blk.k = max(1, min(self.block, blk.d, ELEMENT_BUDGET // max(blk.d, 1)))
        blk.exact = blk.k == blk.d

    # ------------------------------------------------------------------------------------------
    def estimate(
        self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None
    ) -> SensitivityTable:
        self._started = time.perf_counter()
        from mpq.console import bar as progress_bar

        bar = progress_bar(desc="hessian-eigen", unit="HVP", quiet=self.quiet)
        try:
            with self._session(workload, graph) as (blocks, batches, weights_b, sizes, device):
                states = self._run(workload, blocks, batches, weights_b, device, bar)
        finally:
            bar.close()

        layers: dict[str, LayerSensitivity] = {}
        by_name = {n: b for b in blocks for n in b.names}
        for name, info in graph.layers.items():
            b = by_name[name]
            st = states[b.index]
            layers[name] = LayerSensitivity(
                score=st.eigenvalue / info.params if info.params else 0.0,
                params=info.params,
                eigenvalue=st.eigenvalue,
                residual=st.residual,
                iterations=st.iterations,
                hvps=b.hvps,
                block=b.k,
            )
        meta = {
            "method": "block-power-iteration" if self.block > 1 else "power-iteration",
            "eigenvalue": "largest algebraic eigenvalue of each weight-block Hessian H_ll",
            "hvps": sum(b.hvps for b in blocks),
            "batches": len(batches),
            "batch_sizes": sizes,
            "layers_not_converged": [n for b in blocks if b.at_max for n in b.names],
            "target": "Hessian of the sample-weighted mean loss over the used batches (weights n_b / sum n)",
            "batched_hvp": self._batched_ok,
        }
        return check_finite_scores(self.table(workload, layers, **meta))

    # ------------------------------------------------------------------------------------------
    def _run(self, workload, blocks, batches, wb, device, bar) -> dict[int, _Iterate]:
        states: dict[int, _Iterate] = {}
        for b in blocks:
            g = torch.Generator().manual_seed(_seed(self.seed, b.names[0], "eigen"))
            start = _rademacher(g, (b.k, b.d), torch.float64, torch.device("cpu"))
            q, _ = torch.linalg.qr(start.T)
            states[b.index] = _Iterate(x=q.T.contiguous().to(device))
        for it in range(self.max_iter):
            active = [b for b in blocks if not b.done]
            if not active:
                break
            ys = {b.index: torch.zeros(b.k, b.d, dtype=torch.float64, device=device) for b in active}
            for bi, batch in enumerate(batches):
                grads = self._grads(workload, active, batch, bi)
                for b in active:
                    rows = states[b.index].x.to(b.weight.dtype).view(b.k, *b.weight.shape)
                    hv = self._hvp(grads[b.index], b.weight, rows)
                    b.hvps += b.k
                    bar.update(b.k)
                    if hv is not None:
                        b.reached = True
                        ys[b.index] += wb[bi] * hv.reshape(b.k, b.d).double()
                del grads
            for b in active:
                st = states[b.index]
                st.iterations = it + 1
                if not b.reached:  # no second-order path to the loss: the block is zero
                    b.done = True
                    continue
                self._step(st, ys[b.index])
                if st.residual <= self.tol * abs(st.eigenvalue) or b.exact or not torch.any(ys[b.index]):
                    b.done = True
                elif st.iterations >= self.max_iter:
                    b.done = b.at_max = True
            bar.set_postfix(active=sum(not b.done for b in blocks))
        for b in blocks:
            if not b.reached:
                states[b.index] = _Iterate(x=states[b.index].x)  # eigenvalue 0, residual 0, no iterations
        return states

    @staticmethod
    def _step(st: _Iterate, y: torch.Tensor) -> None:
        """Rayleigh-Ritz on span(X) with ``Y = H X``; then ``X = orth(Y - shift X)``."""
        x = st.x
        t = x @ y.T
        theta, s = torch.linalg.eigh((t + t.T) / 2)  # ascending
        top = s[:, -1]
        st.eigenvalue = float(theta[-1])
        st.residual = float(torch.linalg.vector_norm(top @ y - theta[-1] * (top @ x)))
        st.shift = min(st.shift, float(theta[0]), 0.0)
        q, _ = torch.linalg.qr((s.T @ (y - st.shift * x)).T)
        st.x = q.T.contiguous()
