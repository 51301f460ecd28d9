"""Label-free layer importance of layer-wise LLM quantization (Dumitru et al.): LIM and ZD.

- ``metric="lim"`` (default): LIM = 1 - cosine(block input, block output), averaged over the
  calibration tokens: a block that barely changes its input matters little. Only the inputs of the
  calibration batches are used, never the targets or the loss.
- ``metric="zd"``: the z-score distribution, the fraction of a block's weights whose z-score
  ``|w - mean| / std`` (over all the block's quantizable weights) exceeds 1. Data-free.

A *block* is a child of an ``nn.ModuleList`` or ``nn.Sequential`` holding at least two non-leaf
siblings of one class that contain quantizable layers (transformer layers such as ``layers.3``,
ResNet basic blocks); the outermost such modules are taken. Every quantizable layer outside all
blocks is its own block (so in a plain sequential CNN or MLP each layer is scored alone). A
block's score is given to each of its layers.

Tokens: a 2-D or 3-D activation ``[..., features]`` has one token per row; a 4-D or 5-D one
(convolution, channels first) one token per position. When a block's output shape differs from
its input's (a standalone layer changing width), the cosine is taken between the two per-sample
Gram matrices (``X Xᵀ`` and ``Y Yᵀ``), which compare how the block maps samples relative to each other.
A block whose input is not floating point (an embedding looking up token ids) gets LIM = 1: its
output owes nothing to its input.

``score = importance / params`` (spread evenly over the weights, as HAWQ divides a trace by the
weight count), so the cost model's ``score × ||Q(W) - W||²`` is the importance times the layer's
mean squared weight error; ``lim`` or ``zd`` sits beside it. ``probes`` caps
the calibration batches (ignored by ``zd``).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal, Mapping, Optional

import torch
from torch import nn

from pydantic import Field

from mpq.errors import WorkloadError
from mpq.graph import LayerGraph, is_quantizable
from mpq.quant import QuantSpec
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Workload, run_hooked

from ._runtime import calibration, check_device, prepared, progress
from .base import CalibrationSettings, Estimator, SettingsFact, register_estimator

METRICS = ("lim", "zd")


def find_blocks(model: nn.Module, layer_names: list[str]) -> dict[str, list[str]]:
    """Block name -> its quantizable layers (in graph order); standalone layers are their own block."""
    modules = dict(model.named_modules())
    chosen: list[str] = []
    for name, m in modules.items():
        if any(name == c or name.startswith(c + ".") for c in chosen):
            continue
        if not isinstance(m, (nn.ModuleList, nn.Sequential)):
            continue
        by_class: dict[type, list[str]] = defaultdict(list)
        for child_name, child in m.named_children():
            if len(list(child.children())) and not is_quantizable(child) and any(is_quantizable(x) for x in child.modules()):
                by_class[type(child)].append(f"{name}.{child_name}" if name else child_name)
        for names in by_class.values():
            if len(names) >= 2:
                chosen.extend(names)
    blocks: dict[str, list[str]] = {}
    for layer in layer_names:
        owner = next((b for b in chosen if layer.startswith(b + ".")), layer)
        blocks.setdefault(owner, []).append(layer)
    return blocks


def _first_tensor(obj: Any) -> Optional[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for v in obj:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for v in obj.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def tokens(t: torch.Tensor) -> torch.Tensor:
    """One row per token: features last for 2-D/3-D activations, channels first for 4-D/5-D ones."""
    t = t.double()
    if t.dim() <= 1:
        return t.reshape(1, -1)
    if t.dim() >= 4:
        return t.movedim(1, -1).reshape(-1, t.shape[1])
    return t.reshape(-1, t.shape[-1])


def similarity(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """Summed cosine similarity of input and output tokens, and how many were compared."""
    if x.shape == y.shape:
        a, b = tokens(x), tokens(y)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
        return float(cos.sum()), int(cos.numel())
    n = x.shape[0] if x.dim() else 1
    gx = x.double().reshape(n, -1)
    gy = y.double().reshape(n, -1)
    cos = torch.nn.functional.cosine_similarity((gx @ gx.T).reshape(1, -1), (gy @ gy.T).reshape(1, -1), dim=1, eps=1e-12)
    return float(cos) * n, n


def z_outlier_fraction(weights: list[torch.Tensor]) -> float:
    w = torch.cat([t.detach().double().reshape(-1) for t in weights])
    std = w.std(unbiased=False)
    if not std > 0:
        return 0.0
    return float((((w - w.mean()) / std).abs() > 1).double().mean())


@register_estimator
class LayerImportanceEstimator(Estimator):
    """Label-free block importance (LIM: 1 - cos(block in, block out); ZD: weight z-score outliers)."""

    name = "layer-importance"

    class Settings(CalibrationSettings):
        metric: Literal[METRICS] = Field("lim", description="lim: 1 - cos(block in, block out) on data; zd: weight z-scores")

    needs_data = SettingsFact(lambda s: s.metric == "lim")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        blocks = find_blocks(workload.model, graph.names)
        meta: dict[str, Any] = {"metric": self.metric, "blocks": {b: ls for b, ls in blocks.items() if ls != [b]}}
        if self.metric == "zd":
            importance = {b: z_outlier_fraction([graph.module(l).weight for l in ls]) for b, ls in blocks.items()}
        else:
            importance, meta["batches"] = self._lim(workload, graph, blocks)
        layers = {}
        for block, names in blocks.items():
            for name in names:
                info = graph.layers[name]
                value = importance[block]
                layers[name] = LayerSensitivity(score=value / max(info.params, 1), params=info.params, **{self.metric: value})
        return self.table(workload, layers, **meta)

    def _lim(self, workload: Workload, graph: LayerGraph, blocks: dict[str, list[str]]) -> tuple[dict[str, float], int]:
        device = check_device(self.device)
        sums = {b: [0.0, 0] for b in blocks}
        lookups: set[str] = set()
        with prepared(workload.model, device) as model:
            modules = dict(model.named_modules())
            batches = calibration(workload, self.probes, device)

            def hook(block):
                def fn(mod, args, kwargs, out):
                    x = _first_tensor(args) if args else _first_tensor(kwargs)
                    y = _first_tensor(out)
                    if x is None or y is None:
                        return
                    if not x.is_floating_point():
                        lookups.add(block)
                        return
                    s, n = similarity(x, y)
                    sums[block][0] += s
                    sums[block][1] += n
                return fn

            handles = [modules[b].register_forward_hook(hook(b), with_kwargs=True) for b in blocks]
            run_hooked(model, progress(batches, desc=self.name, quiet=self.quiet), handles)
        out = {}
        for b, (s, n) in sums.items():
            if n == 0 and b in lookups:
                out[b] = 1.0
                continue
            if n == 0:
                raise WorkloadError(
                    f"estimator {self.name!r}: block {b!r} never received an input tensor on the calibration "
                    "data, so LIM cannot compare its input and output; use metric 'zd'"
                )
            out[b] = 1.0 - s / n
        return out, len(batches)
