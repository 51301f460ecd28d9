"""Apply a plan to a model: fake-quantize (and prune) each planned layer's weights in place."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from .errors import UnknownLayer, WorkloadError
from .experts import expert_layer, parse_slice_name
from .workload import Batch
from .quant import QuantSpec, fake_quantize, set_weight_matrix, weight_matrix, weight_shape
from .schema import Plan, PlanLayer, dump_document


def planned_module(model: nn.Module, layer: PlanLayer) -> nn.Module:
    """The module a plan layer targets; ``prefix.param[e]`` is expert e's slice of a fused 3-D expert tensor."""
    if parse_slice_name(layer.target):
        module = expert_layer(model, layer.target)
        if module is None:
            raise UnknownLayer(f"plan layer {layer.name!r}: the model has no fused expert tensor slice {layer.target!r}")
        return _checked(module, layer)
    try:
        module = model.get_submodule(layer.target)
    except AttributeError:
        raise UnknownLayer(f"plan layer {layer.name!r}: the model has no module {layer.target!r}") from None
    return _checked(module, layer)


def _checked(module: nn.Module, layer: PlanLayer) -> nn.Module:
    if getattr(module, "weight", None) is None:
        raise UnknownLayer(f"plan layer {layer.name!r}: module {layer.target!r} ({type(module).__name__}) has no weight")
    shape = weight_shape(module)
    if layer.shape is not None and list(layer.shape) != shape and layer.channels is None:
        raise WorkloadError(f"plan layer {layer.name!r}: the plan has weight shape {layer.shape}, the model has {shape}")
    return module


def apply_plan(
    model: nn.Module,
    plan: Plan,
    *,
    inplace: bool = True,
    batches: Optional[Sequence[Batch]] = None,
    observer: str = "minmax",
) -> nn.Module:
    """Quantize (and prune) every planned layer as planned; returns the model (a copy when ``inplace=False``).

    KV-cache entries (``mpq.kv_cache``) fake-quantize their attention module's K and V projections
    outputs. Layers with ``a_bits`` also get their inputs fake-quantized by forward pre-hooks whose ranges
    are calibrated on ``batches`` (after the weights are quantized); ``mpq.activations.
    remove_activation_quant(model)`` takes them off. Every layer is checked before any weight
    changes, so a bad plan leaves the model untouched.
    """
    if not inplace:
        model = copy.deepcopy(model)
    from .kv_cache import install_kv_quant, is_kv_cache

    kv_bits = {l.name: l.w_bits for l in plan.layers if is_kv_cache(l.name)}
    if any(b < 16 for b in kv_bits.values()) and batches is None:
        raise WorkloadError(f"plan quantizes the KV cache ({', '.join(kv_bits)}): its ranges are calibrated on data, so pass batches=")
    targets = [(layer, planned_module(model, layer)) for layer in plan.layers if not is_kv_cache(layer.name)]
    a_bits: dict[str, int] = {}
    for layer, _ in targets:
        if layer.a_bits is None:
            continue
        if a_bits.setdefault(layer.target, layer.a_bits) != layer.a_bits:
            raise WorkloadError(f"plan layer {layer.name!r}: module {layer.target!r} has entries with different a_bits; one module has one input")
    if a_bits and batches is None:
        first = next(l for l, _ in targets if l.a_bits is not None)
        raise WorkloadError(f"plan layer {first.name!r} has a_bits={first.a_bits}: activation ranges are calibrated on data, so pass batches=")
    for layer, module in targets:
        quantize_layer(module, layer)
    if a_bits:
        from .activations import install_activation_quant, remove_activation_quant

        remove_activation_quant(model)
        model._mpq_activation_hooks = install_activation_quant(model, a_bits, batches, observer)
    if kv_bits:
        for h in getattr(model, "_mpq_kv_hooks", None) or []:
            h.remove()
        model._mpq_kv_hooks = install_kv_quant(model, kv_bits, batches)
    return model


def quantize_layer(module: nn.Module, layer: PlanLayer) -> None:
    """Fake-quantize (and prune) ``module``'s weight in place as ``layer`` plans it (its channel range only, if it has one)."""
    w = weight_matrix(module)
    spec = QuantSpec.of(layer)
    if layer.channels is None:
        set_weight_matrix(module, fake_quantize(w, spec))
        return
    start, stop = layer.channels
    if stop > w.shape[0]:
        raise WorkloadError(f"plan layer {layer.name!r}: channels [{start}, {stop}) exceed the {w.shape[0]} outputs of {layer.target!r}")
    new = w.detach().clone()
    new[start:stop] = fake_quantize(w[start:stop], spec)
    set_weight_matrix(module, new)


def save_quantized(model: nn.Module, plan: Plan, path: str | Path) -> Path:
    """Write the dequantized weights as safetensors with the plan (and any calibrated activation ranges)
    in the file's metadata, and the plan beside it."""
    from safetensors.torch import save

    from .output import write_output

    from .output import check_output, is_special

    check_output(path, "--save")
    path = Path(path)
    special = is_special(path)  # /dev/null, a FIFO: written as given, without the plan beside it
    if path.suffix != ".safetensors" and not special:
        path = path.with_suffix(".safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # safetensors refuses tensors that share memory (tied embeddings); store each once
    seen: dict[int, str] = {}
    unique = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        if ptr in seen and v.numel():
            continue
        seen[ptr] = k
        unique[k] = v
    metadata = {"mpq_plan": json.dumps(plan.model_dump(by_alias=True))}
    hooks = getattr(model, "_mpq_activation_hooks", None)
    if hooks is not None and hooks.quantizers:  # calibrated activation ranges: {layer: {"bits", "lo", "hi"}}
        metadata["mpq_activation_ranges"] = json.dumps({n: vars(q) for n, q in hooks.quantizers.items()})
    write_output(path, save(unique, metadata=metadata), what="--save")
    if not special:
        write_output(path.with_suffix(".plan.json"), dump_document(plan), what="--save")
    return path


# ``mpq.apply(...)`` calls :func:`mpq.api.apply` (this module stays importable as before).
from ._entry import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "apply")
