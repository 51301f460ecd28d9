"""Mixture-of-experts weights as per-expert layers, including slices of fused 3-D expert tensors.

transformers 5 stores a mixture of experts' projections as one 3-D parameter per projection
(``mlp.experts.gate_up_proj`` of shape ``(experts, out, in)``, ``mlp.experts.down_proj``), not as
``nn.Linear`` modules. Each expert's slice is its own plannable layer, named after the parameter
with the expert's index in brackets::

    model.layers.0.mlp.experts.gate_up_proj[3]     # expert 3's slice of the fused gate/up projection

The name is the parameter's state-dict key plus ``[e]``, so exporters and :func:`mpq.apply.apply_plan`
address exactly that slice (``tensor[e]``). Models with the older layout (one ``nn.Linear`` per
expert, ``...experts.3.w1``) need nothing here: each expert is a module already.

:func:`expert_layers` gives every such experts module one :class:`ExpertProjection` per slice: a
linear layer whose weight is a view of the slice (the same storage, so quantizing it quantizes the
slice), and replaces the module's forward by the equivalent per-expert loop (transformers' eager
experts forward) calling them, so every estimator sees each expert as a layer with its own input,
output and leaf weight. The projections are not submodules: the model's state dict, parameter
names, outputs and device moves stay what they were (a move re-points the views).

Routing frequency: :func:`routing_frequency` counts, over the calibration batches, the share of
token positions routed to each expert layer (top-k routing gives shares that sum to k per layer).
"""
from __future__ import annotations

import re
import types
from typing import Any, Iterable, Optional

import torch
from torch import nn
from torch.nn import functional as F

#: ``prefix.param[e]``: expert ``e``'s slice of the fused 3-D parameter ``prefix.param``.
SLICE_NAME = re.compile(r"^(?P<param>.+)\[(?P<index>\d+)\]$")
_ATTR = "_mpq_expert_layers"


def slice_name(param: str, index: int) -> str:
    return f"{param}[{index}]"


def parse_slice_name(name: str) -> Optional[tuple[str, int]]:
    """``("prefix.param", e)`` for a slice name, None for an ordinary module name."""
    m = SLICE_NAME.match(name)
    return (m["param"], int(m["index"])) if m else None


class ExpertProjection(nn.Module):
    """Expert ``index``'s slice of ``owner.<param>`` as a linear layer; its weight is a view of the slice."""

    def __init__(self, owner: nn.Module, param: str, index: int, transposed: bool):
        super().__init__()
        self.__dict__["_owner"] = owner  # not a submodule: the owner is the model's, this is a view of it
        self.param, self.index, self.transposed = param, index, transposed
        self.weight = nn.Parameter(self._slice(), requires_grad=False)
        bias = getattr(owner, f"{param}_bias", None)
        self.__dict__["_has_bias"] = isinstance(bias, torch.Tensor)
        self.bias = nn.Parameter(bias.data[index], requires_grad=False) if self._has_bias else None

    def _slice(self) -> torch.Tensor:
        w = getattr(self._owner, self.param).data[self.index]
        return w.t() if self.transposed else w

    def sync(self) -> None:
        """Re-point the views at the owner's tensors (after a device or dtype move replaced them)."""
        w = self._slice()
        if self.weight.data_ptr() != w.data_ptr() or self.weight.device != w.device or self.weight.dtype != w.dtype:
            self.weight.data = w
        if self._has_bias:
            b = getattr(self._owner, f"{self.param}_bias").data[self.index]
            if self.bias.data_ptr() != b.data_ptr() or self.bias.device != b.device:
                self.bias.data = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.param}[{self.index}], out={self.weight.shape[0]}, in={self.weight.shape[1]}"


def is_fused_experts(module: nn.Module) -> bool:
    """transformers' experts layout: 3-D ``down_proj`` and ``gate_up_proj`` (or ``up_proj``), one slice per expert."""
    n = getattr(module, "num_experts", None)
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj", getattr(module, "up_proj", None))
    return (
        isinstance(n, int) and isinstance(down, nn.Parameter) and isinstance(up, nn.Parameter)
        and down.dim() == 3 and up.dim() == 3 and down.shape[0] == n and up.shape[0] == n
    )


def _experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' eager experts forward, each expert's projections called as :class:`ExpertProjection` layers."""
    layers = self.__dict__[_ATTR]
    for proj in layers["all"]:
        proj.sync()
    up, down = layers["up"], layers["down"]
    final = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        token_idx, top_k_pos = torch.where(top_k_index == e)
        if token_idx.numel() == 0:
            continue
        h = up[e](hidden_states[token_idx])
        h = self._apply_gate(h) if layers["gated"] else self.act_fn(h)
        h = down[e](h)
        if getattr(self, "has_post_expert_norm", False):
            h = self.post_expert_norm(h)
        h = h * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, h.to(final.dtype))
    return final


def _apply_then_sync(self: nn.Module, fn, *args, **kwargs):
    out = type(self)._apply(self, fn, *args, **kwargs)
    for proj in self.__dict__[_ATTR]["all"]:
        proj.sync()
    return out


def _attach(module: nn.Module) -> dict:
    layers = module.__dict__.get(_ATTR)
    if layers is not None:
        return layers
    gated = isinstance(getattr(module, "gate_up_proj", None), nn.Parameter)
    transposed = bool(getattr(module, "is_transposed", False))
    up_name = "gate_up_proj" if gated else "up_proj"
    up = [ExpertProjection(module, up_name, e, transposed) for e in range(module.num_experts)]
    down = [ExpertProjection(module, "down_proj", e, transposed) for e in range(module.num_experts)]
    layers = {"up": up, "down": down, "all": up + down, "gated": gated, "names": (up_name, "down_proj")}
    module.__dict__[_ATTR] = layers
    module.forward = types.MethodType(_experts_forward, module)
    module._apply = types.MethodType(_apply_then_sync, module)
    return layers


def expert_layers(model: nn.Module) -> dict[str, ExpertProjection]:
    """Every fused expert slice of ``model`` as a layer, by slice name, in module order (attached once)."""
    out: dict[str, ExpertProjection] = {}
    for name, module in model.named_modules():
        if not is_fused_experts(module):
            continue
        layers = _attach(module)
        prefix = f"{name}." if name else ""
        for kind in ("up", "down"):
            for proj in layers[kind]:
                out[slice_name(prefix + proj.param, proj.index)] = proj
    return out


def expert_layer(model: nn.Module, name: str) -> Optional[ExpertProjection]:
    """The layer a slice name addresses, or None when ``name`` is not a slice of a fused expert tensor."""
    return expert_layers(model).get(name) if parse_slice_name(name) else None


def is_expert_layer(name: str, module: nn.Module) -> bool:
    """A fused slice, or a module of the per-expert layout (``...experts.3.w1``)."""
    return isinstance(module, ExpertProjection) or re.search(r"(^|\.)experts\.\d+\.", name) is not None


def routing_frequency(model: nn.Module, modules: dict[str, nn.Module], batches: Iterable[tuple[Any, Any]]) -> dict[str, float]:
    """Share of token positions each expert layer received over ``batches`` (only expert layers are listed).

    Token positions are counted as the rows the model's dense (non-expert) layers see; an expert
    layer's rows are the positions routed to it.
    """
    from .workload import run_hooked

    experts = {n for n, m in modules.items() if is_expert_layer(n, m)}
    if not experts:
        return {}
    rows = {n: 0 for n in modules}

    def hook(name):
        def count(mod, args, out):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() >= 1:
                rows[name] += x.numel() // max(int(x.shape[-1]), 1) if x.is_floating_point() else x.numel()
        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    run_hooked(model, batches, handles)
    tokens = max((rows[n] for n in modules if n not in experts), default=0)
    return {n: rows[n] / tokens if tokens else 0.0 for n in modules if n in experts}
