"""The measured objective for a sequence of plans that differ in a few layers (refinement), computed incrementally.

``IncrementalObjective(workload)(plan)`` is the mean calibration loss of the model quantized by
``plan``, the same number as :func:`mpq.search.measured.measured_objective` gives (the same
quantizer, the same batches, the same sum), at a fraction of the cost when consecutive plans share
most of their layers, as refinement's moves do:

- **Only changed layers are quantized.** The model keeps the last plan's weights; a new plan
  re-quantizes (from a saved copy of the original weights) only the modules whose planned options
  differ. One copy of the planned weights is kept, not one per evaluation.
- **Unchanged leading blocks are not run.** The outputs of the model's repeated blocks (the
  largest ``nn.ModuleList``: transformer layers) under the best plan measured so far are kept per
  calibration batch; a plan that changes no layer running before block ``j`` (the order is recorded
  on the first evaluation) takes blocks ``0..j-1``'s outputs from there instead of running them. A
  block is a function of its inputs and weights in eval mode, so the outputs are the ones the run
  would compute (the same kernels on the same inputs). Refinement measures moves from the best plan,
  so that is the plan worth keeping. The kept outputs are bounded (at most the planned weights' size
  per plan; above that, nothing is kept and every block runs). Hugging Face models run with their
  KV cache off meanwhile (it only stores keys and values; outputs do not change).

Use it as a context manager: on exit the model's weights (bit for bit) and settings are restored.
Plans with activation quantization or KV-cache entries are refused (their ranges are calibrated per
plan; use the stateless objective).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .apply import planned_module, quantize_layer
from .errors import DocumentError
from .kv_cache import is_kv_cache
from .quant import QuantSpec
from .schema import Plan
from .workload import Workload


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_clone(v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(v) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _clone(v)) for k, v in obj.items())
    return obj


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(v) for v in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    return 0


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The children of the model's largest ``nn.ModuleList`` by parameters (its layers), or [] when there is none."""
    best, size = [], 0
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) >= 2:
            n = sum(p.numel() for p in m.parameters())
            if n > size:
                best, size = list(m), n
    return best


class IncrementalObjective:
    """Mean calibration loss of the workload's model quantized by a plan; see the module docstring."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self.model = workload.model
        self.original: dict[str, tuple[nn.Module, torch.Tensor]] = {}  # target -> (module, original weight)
        self.applied: dict[str, tuple] = {}  # target -> the planned entries now quantized into it
        self.blocks = repeated_blocks(self.model)
        self.first_call: Optional[dict[str, int]] = None  # target -> position of its first call in a forward pass
        self.block_end: list[int] = []  # position at which each block returns
        self.best: Optional[tuple[dict[str, tuple], float, list[list[Any]]]] = None  # keys, value, outputs[block][batch]
        self.cache_limit, self.caching, self._batch = 0, True, 0
        self.evaluations = self.blocks_skipped = 0
        config = getattr(self.model, "config", None)
        self._use_cache = getattr(config, "use_cache", None)
        self._training = self.model.training

    # -- the context ------------------------------------------------------------------------------
    def __enter__(self) -> "IncrementalObjective":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Put the original weights back and the model's settings as they were; drop kept outputs."""
        with torch.no_grad():
            for module, weight in self.original.values():
                module.weight.copy_(weight)
        self.original.clear()
        self.applied.clear()
        self.best = None
        if self._use_cache is not None:
            self.model.config.use_cache = self._use_cache
        self.model.train(self._training)

    # -- one evaluation ---------------------------------------------------------------------------
    def __call__(self, plan: Plan) -> float:
        keys = self._keys(plan)
        self._quantize(plan, keys)
        if self._use_cache is not None:
            self.model.config.use_cache = False
        self.model.eval()
        skip = self._skippable(keys)
        record = self.first_call is None
        outputs: list[list[Any]] = [[] for _ in self.blocks]
        handles = self._hooks(skip, outputs, record)
        try:
            with torch.no_grad():
                losses = []
                for b, batch in enumerate(self.workload.batches):
                    self._batch = b
                    losses.append(float(self.workload.loss(self.model, batch)))
                    if record and b == 0:
                        self._order_recorded()
                value = float(sum(losses) / len(losses))
        finally:
            for h in handles:
                h.remove()
            for block in self.blocks[:skip]:
                block.__dict__.pop("forward", None)
        self.evaluations += 1
        self.blocks_skipped += skip
        self._keep(keys, value, outputs, skip)
        return value

    def _keys(self, plan: Plan) -> dict[str, tuple]:
        keys: dict[str, list] = {}
        for layer in plan.layers:
            if is_kv_cache(layer.name) or layer.a_bits is not None:
                raise DocumentError(f"plan layer {layer.name!r}: the incremental objective quantizes weights only "
                                    "(activation and KV-cache ranges are calibrated per plan)")
            keys.setdefault(layer.target, []).append((layer.name, QuantSpec.of(layer), tuple(layer.channels or ())))
        return {t: tuple(v) for t, v in keys.items()}

    def _quantize(self, plan: Plan, keys: dict[str, tuple]) -> None:
        modules = {}
        for layer in plan.layers:  # every layer resolves before any weight changes
            if layer.target not in modules:
                modules[layer.target] = planned_module(self.model, layer)
        changed = {t for t in keys if self.applied.get(t) != keys[t]}
        with torch.no_grad():
            for target in [t for t in self.applied if t not in keys]:  # no longer planned: back to the original
                module, weight = self.original[target]
                module.weight.copy_(weight)
                del self.applied[target]
            for target in changed:
                module = modules[target]
                if target not in self.original:
                    self.original[target] = (module, module.weight.detach().clone())
                else:
                    module.weight.copy_(self.original[target][1])
                self.applied.pop(target, None)
            for layer in plan.layers:  # in plan order, as apply_plan quantizes them
                if layer.target in changed:
                    quantize_layer(modules[layer.target], layer)
            for target in changed:
                self.applied[target] = keys[target]
        if self.caching and not self.cache_limit:
            self.cache_limit = sum(w.numel() * 4 for _, w in self.original.values())

    # -- skipping unchanged blocks ----------------------------------------------------------------
    def _skippable(self, keys: dict[str, tuple]) -> int:
        """How many leading blocks the best plan's kept outputs stand in for (0: run them all)."""
        if self.best is None or self.first_call is None or not self.blocks:
            return 0
        best_keys = self.best[0]
        changed = [t for t in set(keys) | set(best_keys) if keys.get(t) != best_keys.get(t)]
        if not changed:
            return 0  # the same plan again: measured again, as the objective would be
        first = min(self.first_call.get(t, -1) for t in changed)
        skip = 0
        while skip < len(self.blocks) and self.block_end[skip] < first:
            skip += 1
        return skip

    def _hooks(self, skip: int, outputs: list[list[Any]], record: bool) -> list:
        handles = []
        if record:
            self._events: list[tuple[str, Any]] = []
            for target, (module, _) in self.original.items():
                handles.append(module.register_forward_pre_hook(
                    lambda m, a, t=target: self._events.append(("call", t)) if self._batch == 0 else None))
        for i, block in enumerate(self.blocks):
            if i < skip:
                kept = self.best[2][i]
                block.forward = lambda *a, i=i, kept=kept, **k: _clone(kept[self._batch])
                outputs[i] = kept
                continue

            def keep(m, a, out, i=i):
                if record and self._batch == 0:
                    self._events.append(("end", i))
                outputs[i].append(_clone(out) if self.caching else None)
            handles.append(block.register_forward_hook(keep))
        return handles

    def _order_recorded(self) -> None:
        """Positions of the first call of each target and of each block's return, from the first batch of the first run."""
        first_call: dict[str, int] = {}
        ends: dict[int, int] = {}
        for pos, (kind, what) in enumerate(self._events):
            if kind == "call":
                first_call.setdefault(what, pos)
            else:
                ends.setdefault(what, pos)
        calls_per_block = [sum(1 for k, w in self._events if k == "end" and w == i) for i in range(len(self.blocks))]
        in_order = [ends.get(i) for i in range(len(self.blocks))]
        if any(c != 1 for c in calls_per_block) or None in in_order or in_order != sorted(in_order):
            self.blocks = []  # blocks not called once each, in order: nothing is skipped
        self.first_call, self.block_end = first_call, [e for e in in_order if e is not None]
        del self._events

    def _keep(self, keys: dict[str, tuple], value: float, outputs: list[list[Any]], skip: int) -> None:
        if not self.blocks or (self.best is not None and not value < self.best[1]):
            return
        fresh = sum(_nbytes(o) for block in outputs[skip:] for o in block)
        kept = sum(_nbytes(o) for block in outputs[:skip] for o in block)
        if any(o is None for block in outputs for o in block) or fresh + kept > self.cache_limit:
            self.best = None
            self.caching = False  # too large to keep: every block runs from now on
            return
        self.best = (keys, value, outputs)
