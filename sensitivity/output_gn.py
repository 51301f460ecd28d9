"""Output Gauss-Newton: each layer's quantization damage as a quadratic form at the model's output.

For layer l and option o the distortion is ``½ Δz^T H Δz``, where ``Δz = J_l vec(Q_o(W_l) - W_l)``
is the change of the model's output to first order and ``H`` is the Hessian of the loss with
respect to that output (the Gauss-Newton approximation of the loss increase). It is estimated
without forming ``J_l``: with an output cotangent ``v`` whose covariance is ``H``,
``E[(v^T Δz)^2] = Δz^T H Δz``, and ``v^T Δz = Σ_t g_t · (Δy_t)`` where ``g_t`` is the cotangent
``v`` pulled back to the layer's output at token/sample t (one backward pass gives it for every
layer) and ``Δy_t = (Q_o(W_l) - W_l) x_t`` is the layer's own output change (a local product).

Unlike ModelOpt's score (``grad-output``), the sum over tokens and channels is taken *before*
squaring, so correlated output errors add up as they do in the model; and the cotangents are
sampled, so the loss need not have a gradient at full precision (an encoder's self-distillation
has none). Cotangents:

- self-distillation (``workload.meta["loss"] == "self-distillation-mse"``, targets with ``mask`` and
  ``hidden``): ``v = sqrt(2 / ref) · mask · ε``, ε standard normal (the loss's own Hessian);
- otherwise the model's output is read as logits: ``v = (p - onehot(y)) / sqrt(N)`` with ``y`` drawn
  from ``p = softmax(logits)`` at each of the N positions (the Fisher = Gauss-Newton of a mean
  cross-entropy).

Sequences of a batch are independent (the model reads each alone, and their cotangents are drawn
independently), so with ``per_sequence`` (default) ``v^T Δz`` is split into one term per sequence
(or sample) and the terms are squared apart: ``E[Σ_b s_b²] = Δz^T H Δz`` as before, since the cross
terms have zero mean, and a batch of B sequences gives B squared terms a draw instead of one (the
estimate's variance falls about B-fold; within a sequence, tokens and channels still add before
squaring). A batch of more than :data:`MAX_PARTS` sequences is squared in that many terms of consecutive
sequences. A layer whose input does not lead with the batch (an expert's routed tokens) keeps one
term for the batch.

Cost: one forward and ``samples`` backward passes per calibration batch (to the layers' outputs only: no
weight gradient), plus, per layer and sample, ``M = G^T X`` for each term (over the token rows that get a
cotangent where the batch is one term) and its inner product with every option's weight error
(:class:`_LayerProbe`). Memory: one batch's graph,
one logits-sized cotangent, and the errors of options that are not integer grids (four bytes a weight;
integer options are quantized again a slice at a time where they are used, :class:`_OptionErrors`); a
layer's pulled-back cotangent lives only while the backward pass is at that layer. ``seed`` fixes the
cotangents.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

import torch
from torch import nn

from mpq.errors import WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import IntGrid, QuantSpec, fake_quantize, int_grid, weight_matrix
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Workload, call_model

from pydantic import Field

from mpq.settings import Count

from ._runtime import (calibration, candidate_options, check_device, fit_score, output_tensor, prepared, progress,
                       return_freed_memory)
from .base import CalibrationSettings, Estimator, register_estimator
from .grad_output import quantized_weight


def main_output(out: Any) -> torch.Tensor:
    """The output the loss reads: an encoder's ``last_hidden_state``, else the logits or the tensor itself."""
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if isinstance(hidden, torch.Tensor) else output_tensor(out)


def _distillation_target(workload: Workload, targets: Any) -> bool:
    return (workload.meta or {}).get("loss") == "self-distillation-mse" and isinstance(targets, dict) and "mask" in targets


def sample_cotangents(workload: Workload, out: torch.Tensor, targets: Any, samples: int, gen: torch.Generator) -> torch.Tensor:
    """``samples`` output cotangents (stacked on a new first dim) whose covariance is the loss Hessian at the output."""
    return torch.stack(list(cotangents(workload, out, targets, samples, gen)))


def cotangents(workload: Workload, out: torch.Tensor, targets: Any, samples: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """The ``samples`` cotangents of :func:`sample_cotangents`, one at a time (the random draws are made up front,
    so the values are the same; only one output-sized cotangent is alive at a time, not ``samples`` of them).
    Cotangents are in the output's dtype, as the backward pass takes them."""
    out, dtype = out.detach(), out.dtype
    if _distillation_target(workload, targets):
        mask = targets["mask"].to(out.device).unsqueeze(-1).to(out.dtype)
        teacher = targets["hidden"].to(out.device).float()
        ref = float((teacher**2 * mask).sum().clamp(min=1e-12))
        eps = torch.randn((samples, *out.shape), generator=gen).to(out.device)
        for k in range(samples):
            yield (eps[k] * mask * (2.0 / ref) ** 0.5).to(dtype)
        return
    if out.dim() == 0 or out.shape[-1] < 2:
        raise WorkloadError(
            f"estimator 'output-gn': the model's output of shape {tuple(out.shape)} is not logits over at least two "
            "classes, and the workload's loss is not a known self-distillation; use 'measured' or 'hessian-trace'"
        )
    logits = out.reshape(-1, out.shape[-1])
    n = logits.shape[0]
    # Row blocks of ROWS tokens: the softmax, draws and cotangent of a block at a time, so a large vocabulary
    # holds one logits-sized tensor (the cotangent, in the output's dtype), not the probabilities and a
    # float32 copy beside it (the 100M Llama's 30,522-token vocabulary over 2,048 tokens: 250 MB each).
    blocks = [slice(start, min(start + ROWS, n)) for start in range(0, n, ROWS)]
    draws = torch.cat([torch.multinomial(torch.softmax(logits[b].float(), dim=-1).cpu(), samples, replacement=True,
                                         generator=gen) for b in blocks])  # (n, samples), drawn up front
    scale = n**-0.5
    for k in range(samples):
        cot = torch.empty(logits.shape, dtype=dtype, device=logits.device)
        for b in blocks:
            rows = torch.softmax(logits[b].float(), dim=-1)
            rows[torch.arange(rows.shape[0], device=rows.device), draws[b, k].to(rows.device)] -= 1.0
            cot[b] = rows.mul_(scale)
        yield cot.reshape(out.shape)
        del cot  # before the next one is allocated


#: Token rows per block where a logits-sized tensor is built or scanned (256 rows of a 30k vocabulary: 31 MB of float32).
ROWS = 256


@register_estimator
class OutputGNEstimator(Estimator):
    """½ Δz^T H Δz per layer and option, from sampled output cotangents (a Monte-Carlo Gauss-Newton)."""

    name = "output-gn"
    per_option = True

    class Settings(CalibrationSettings):
        samples: Count = Field(4, description="output cotangents sampled per calibration batch (one backward pass each)")
        per_sequence: bool = Field(True, description="square each sequence's share of v^T Δz apart (same expectation, "
                                   "about batch-size times less variance); false: one term a batch")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        specs = candidate_options(options, self.name)
        device = check_device(self.device)
        gen = self.generator()
        with prepared(workload.model, device, grad=True) as model:
            for p in model.parameters():  # no weight gradient is ever computed: only the layers' output cotangents
                p.requires_grad_(False)
            probes = {name: _LayerProbe(graph.module(name), specs) for name in graph.names}
            batches = calibration(workload, self.probes, device)
            draws = len(batches) * self.samples
            for inputs, targets in progress(batches, desc=self.name, quiet=self.quiet):
                return_freed_memory()  # graph discovery's and the last batch's freed blocks
                roots: list[torch.Tensor] = []
                handles = [p.module.register_forward_hook(p.forward_hook(roots)) for p in probes.values()]
                try:
                    with torch.enable_grad():
                        out = main_output(call_model(model, inputs))
                    for h in handles:
                        h.remove()
                    handles = []
                    if not out.requires_grad:
                        continue  # no planned layer reaches the output (as before: every distortion stays 0)
                    batch = (out.shape[0], out.dim()) if self.per_sequence and out.dim() >= 2 else None
                    for k, cot in enumerate(cotangents(workload, out, targets, self.samples, gen)):
                        for p in probes.values():
                            p.start_draw(batch)
                        torch.autograd.grad(out, roots, grad_outputs=cot, retain_graph=k + 1 < self.samples,
                                            allow_unused=True)
                        for p in probes.values():
                            p.end_draw()
                        del cot
                finally:
                    for h in handles:
                        h.remove()
                    for p in probes.values():
                        p.calls.clear()
                del roots, out
            layers = {}
            for info in graph:
                probe = probes.pop(info.name)
                d, errs = probe.finish(draws)
                layers[info.name] = LayerSensitivity(score=fit_score(d, errs), params=info.params, options=d)
        return self.table(workload, layers, batches=len(batches), samples=self.samples)


#: Most terms a batch is split into (consecutive sequences share a term beyond it, :func:`_parts`): the products
#: cost one pass over the weights a term (16 terms of 128 tokens cost MiniLM's estimate 45% more time, 8 terms 20%)
MAX_PARTS = 8


def _parts(batch: int) -> int:
    """Terms a batch of ``batch`` sequences is squared in: its largest divisor up to :data:`MAX_PARTS`."""
    return max(d for d in range(1, min(batch, MAX_PARTS) + 1) if batch % d == 0)


#: Weights per slice in :class:`_OptionErrors` (4 MB of float32: within a shared cache, few enough calls).
SLICE = 1 << 20


class _OptionErrors:
    """``Q_o(W) - W`` of one layer for every option, float32, ``[out, inputs]`` (:func:`mpq.quant.weight_matrix`'s layout).

    An integer option is held as its grid only (:class:`mpq.quant.IntGrid`: scales and zero points) and its error
    is rounded again where it is used, a slice of rows at a time: the quantizer's values, and no byte a weight
    and option (the 100M Llama's 8 default options: 586 MB). Any other option keeps its float32 error.
    """

    def __init__(self, module: nn.Module, specs: Mapping[str, QuantSpec]):
        w = weight_matrix(module).detach()
        self.dtype, self.w = w.dtype, w.float()  # float32 models: a view of the weight itself, no copy
        self.items: list[Any] = []  # an integer option's IntGrid, or another option's float32 error
        self.sq: dict[str, float] = {}
        rows, k = self.w.shape
        buf = torch.empty(min(self.step, rows), k, dtype=torch.float32, device=self.w.device)
        for oid, spec in specs.items():
            grid = int_grid(w, spec)
            if grid is not None:
                self.items.append(grid)
                self.sq[oid] = sum(_sq_norm(self._int_error(grid, start, stop, buf)) for start, stop in self._slices())
                continue
            e = fake_quantize(w, spec).float() - self.w
            self.sq[oid] = _sq_norm(e)
            self.items.append(e)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def step(self) -> int:
        """Rows per slice: :data:`SLICE` weights."""
        return max(1, SLICE // self.w.shape[1])

    def _slices(self, step: Optional[int] = None) -> Iterator[tuple[int, int]]:
        rows, step = self.w.shape[0], step or self.step
        return ((start, min(start + step, rows)) for start in range(0, rows, step))

    def _int_error(self, grid: IntGrid, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """An integer option's error on rows ``start:stop``, written into ``out`` (float32, at least that many rows)."""
        return grid.rows(start, stop).error(self.w[start:stop], out[: stop - start], self.dtype)

    def buffer(self) -> torch.Tensor:
        """A float32 ``[out, inputs]`` scratch matrix for :meth:`error`."""
        return torch.empty(self.w.shape, dtype=torch.float32, device=self.w.device)

    def error(self, i: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Option ``i``'s error (an integer option's is written into ``out``, a float32 buffer of the weight's size)."""
        item = self.items[i]
        if isinstance(item, IntGrid):
            return self._int_error(item, 0, self.w.shape[0], self.buffer() if out is None else out)
        return item

    def dots(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``<Q_o(W) - W, G^T X>`` for every option (float64): ``g`` ``[tokens, out]`` and ``x`` ``[tokens, inputs]``
        give ``[options]``; ``[sequences, tokens, ·]`` give one product a sequence, ``[options, sequences]``.

        Slices of :data:`SLICE` weights at a time (over all sequences together): a slice's rows of ``M = G^T X``
        are formed, every option's error on them is rebuilt, and one product takes them all while they are in
        the cache (a whole lm_head's ``M`` or error would be a 94 MB temporary on the 100M Llama)."""
        rows, k = self.w.shape
        seqs = x.shape[0] if x.dim() == 3 else 1
        step = max(1, self.step // seqs)
        errors = torch.empty(len(self.items), min(step, rows), k, dtype=torch.float32, device=self.w.device)
        total = torch.zeros(len(self.items), seqs, dtype=torch.float64)
        x = x.float()
        for start, stop in self._slices(step):
            gs = g[..., start:stop].float()
            mc = (torch.bmm(gs.transpose(1, 2), x) if x.dim() == 3 else gs.t() @ x).reshape(seqs, -1)
            e = errors[:, : stop - start]
            for i, item in enumerate(self.items):
                if isinstance(item, IntGrid):
                    self._int_error(item, start, stop, e[i])
                else:
                    e[i].copy_(item[start:stop])
            total += (e.reshape(len(self.items), -1) @ mc.t()).double()  # [options, sequences]
        return total if x.dim() == 3 else total[:, 0]


def _sq_norm(e: torch.Tensor) -> float:
    """``||e||²`` in float64, a few thousand rows at a time (a whole embedding in float64 would be 2x its size again)."""
    return float(sum(float(rows.double().pow(2).sum()) for rows in e.reshape(e.shape[0], -1).split(4096)))


class _LayerProbe:
    """One layer's share of the estimate: ``s_o = v^T Δz = Σ_t g_t · (ΔW_o x_t)`` per option and cotangent draw.

    The layer's output gets a tensor hook, so ``g`` (the cotangent pulled back to the layer's output) is
    used the moment the backward pass reaches the layer and freed after it: no output gradient of any
    layer is kept, and no weight gradient is computed. For a linear layer (``nn.Linear``, transformers'
    ``Conv1D``, an expert slice) ``s_o = <M, ΔW_o>`` with ``M = G^T X`` over the token rows where ``g``
    is not zero (padding gets no cotangent in a self-distillation), one product per option on errors
    held compactly (:class:`_OptionErrors`); an embedding keeps its few ``(token, g)`` rows and meets the
    option errors at the end (its errors would be as large as the vocabulary); any other layer computes
    ``ΔW_o x`` by a functional call of the module, as its own forward defines it. A layer called more than
    once in a forward pass adds its calls' ``s_o`` before squaring (the output change is the sum of the
    calls' changes).
    """

    def __init__(self, module: nn.Module, specs: Mapping[str, QuantSpec]):
        self.module, self.specs = module, dict(specs)
        kind = type(module).__name__
        self.kind = ("linear" if isinstance(module, nn.Linear) or kind in ("ExpertProjection", "Conv1D") else
                     "embedding" if isinstance(module, nn.Embedding) else "other")
        self.sums = torch.zeros(len(specs), dtype=torch.float64)  # Σ over draws of s_o² (÷ 2 and draws at the end)
        self.draw = torch.zeros(len(specs), 1, dtype=torch.float64)  # s_o of the current draw, a column a sequence
        self.batch: Optional[tuple[int, int]] = None  # the output's (batch size, rank) when sequences are squared apart
        self.parts = 1  # terms the current draw is squared in (:func:`_parts` of the batch)
        self.calls: list[tuple] = []
        self.rows: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # embedding: (token ids, g rows) per draw
        self.errors: Optional[_OptionErrors] = None
        self.sq_errors: dict[str, float] = {}
        if self.kind != "embedding":
            self.errors = _OptionErrors(module, specs)
            self.sq_errors = self.errors.sq

    def forward_hook(self, roots: list[torch.Tensor]) -> Callable:
        def record(mod, args, out):
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                return None
            replaced = None
            if not out.requires_grad:  # nothing before this layer needs a gradient: its output joins the backward
                if not roots:  # through one scalar zero (x + 0 is x), which the backward asks its gradient for
                    roots.append(torch.zeros((), dtype=out.dtype, device=out.device, requires_grad=True))
                replaced = out + roots[0]
                out = replaced
            call = (args, len(self.calls))
            self.calls.append(call)
            out.register_hook(lambda g, call=call: self._pulled(call[0], g))
            return replaced
        return record

    def start_draw(self, batch: Optional[tuple[int, int]] = None) -> None:
        """A new cotangent draw; ``batch`` = the model output's (batch size, rank) to square sequences apart."""
        self.batch = batch
        self.parts = _parts(batch[0]) if batch else 1
        self.draw = torch.zeros(len(self.specs), self.parts, dtype=torch.float64)
        if self.kind == "embedding":
            self.rows.append([])

    def end_draw(self) -> None:
        if self.kind != "embedding":
            self.sums += (self.draw**2).sum(dim=1)

    def _per_sequence(self, t: torch.Tensor) -> bool:
        """Whether ``t`` (a layer's input or output cotangent) leads with the batch: at least the output's rank and
        the batch's size first. An expert's routed tokens (``[tokens, inputs]`` under a ``[batch, seq, hidden]``
        output) do not."""
        return self.batch is not None and t.dim() >= max(2, self.batch[1]) and t.shape[0] == self.batch[0]

    def _pulled(self, args: tuple, g: torch.Tensor) -> None:
        with torch.no_grad():
            if self.kind == "other":
                buf = self.errors.buffer()
                for i in range(len(self.errors)):
                    e = self.errors.error(i, buf).reshape(self.module.weight.shape)
                    dy = _output_change(self.module, e.to(self.module.weight.dtype), args)
                    prod = (g.double() * dy.double())
                    if self._per_sequence(g):
                        self.draw[i] += prod.reshape(self.parts, -1).sum(dim=1)
                    else:
                        self.draw[i, 0] += float(prod.sum())
                return
            x = args[0]
            if self.kind == "linear" and self._per_sequence(x) and self._per_sequence(g):
                # one product a sequence (its padding rows, whose cotangent is zero, included)
                self.draw += self.errors.dots(g.reshape(self.parts, -1, g.shape[-1]), x.reshape(self.parts, -1, x.shape[-1]))
                return
            g2 = g.reshape(-1, g.shape[-1])
            keep = torch.cat([b.ne(0).any(dim=1) for b in g2.split(ROWS)])  # by blocks: an lm_head's g is logits-sized
            every = bool(keep.all())
            if self.kind == "embedding":
                ids = x.reshape(-1)
                self.rows[-1].append((ids if every else ids[keep], (g2 if every else g2[keep]).float().clone()))
                return
            x2 = x.reshape(-1, x.shape[-1])
            if not every:
                x2, g2 = x2[keep], g2[keep]
            self.draw[:, 0] += self.errors.dots(g2, x2)

    def finish(self, draws: int) -> tuple[dict[str, float], dict[str, float]]:
        """The distortion ``½ E[s_o²]`` and ``||ΔW_o||²`` per option."""
        if self.kind == "embedding":
            w = self.module.weight.detach()
            for i, (oid, spec) in enumerate(self.specs.items()):
                e = quantized_weight(self.module, spec).float() - w.float()
                self.sq_errors[oid] = _sq_norm(e)
                for rows in self.rows:
                    s = sum(float((e[ids] * g).double().sum()) for ids, g in rows)
                    self.sums[i] += s * s
                del e
        d = {oid: 0.5 * float(self.sums[i]) / draws for i, oid in enumerate(self.specs)}
        return d, self.sq_errors


def _output_change(module: nn.Module, dw: torch.Tensor, args: tuple) -> torch.Tensor:
    """The layer's output change when its weight moves by ``dw`` (bias and nonlinearity-free: the layer is linear in W)."""
    from torch.func import functional_call

    params = {"weight": dw}
    if getattr(module, "bias", None) is not None:
        params["bias"] = torch.zeros_like(module.bias)
    return functional_call(module, params, args)
