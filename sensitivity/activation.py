"""Activation sensitivity: the measured loss increase when one layer's input alone is fake-quantized.

For every planned layer and every activation quantization ``a{bits}`` (per-tensor static integers
over ranges calibrated on the calibration batches, exactly as ``mpq apply`` quantizes them),
``a{bits}-token`` (dynamic per-token integers) and ``a8-fp8`` (fp8 e4m3 with a calibrated
per-tensor scale), the distortion is ``max(0, loss(input of l quantized) - loss(full precision))``
on the calibration batches, with the weights in full precision. The cost model adds it to the
weight distortion of every option with those activation bits (``d(w, a) = d_w + d_a``): the two
perturbations enter different inputs of the loss, and the additive model is what lets every solver
handle W×A options unchanged. The result lands in the table's ``layers.*.activations``.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import torch

from mpq.activations import ActivationQuantizer, activation_id, make_activation_quantizer, observe_ranges
from mpq.errors import EstimatorSettingsError, WorkloadError
from mpq.graph import LayerGraph
from mpq.schema import SensitivityTable
from mpq.settings import check_settings
from mpq.workload import Workload

from ._runtime import calibration, check_device, mean_loss, prepared, progress
from .base import CalibrationSettings

#: Activation formats measured: per-tensor static int (what ``apply`` does), per-token dynamic int, fp8 e4m3.
MEASURED_FORMATS = ("int", "int-token", "fp8_e4m3")


def measure_activation_sensitivity(
    workload: Workload,
    graph: LayerGraph,
    a_bits: Iterable[int],
    *,
    formats: Sequence[str] = ("int",),
    probes: Optional[int] = None,
    device: str = "cpu",
    observer: str = "minmax",
    quiet: bool = True,
) -> dict[str, dict[str, float]]:
    """``{layer: {activation id: loss increase}}`` with only that layer's input quantized."""
    bits = sorted({int(b) for b in a_bits})
    if not bits or any(b < 1 or b > 16 for b in bits):
        raise WorkloadError(f"activation bits must be between 1 and 16, got {bits}")
    for fmt in formats:
        if fmt not in MEASURED_FORMATS:
            raise WorkloadError(f"activation format {fmt!r} is unknown; expected some of {list(MEASURED_FORMATS)}")
    probes = check_settings("activation sensitivity", CalibrationSettings, {"probes": probes, "device": device},
                            EstimatorSettingsError).probes
    kinds = [(b, f) for f in formats for b in (bits if f != "fp8_e4m3" else [8])]
    out: dict[str, dict[str, float]] = {name: {} for name in graph.names}
    with prepared(workload.model, check_device(device)) as model:
        batches = calibration(workload, probes, check_device(device))
        modules = {name: graph.module(name) for name in graph.names}
        ranges = observe_ranges(model, modules, batches, observer)
        reference = mean_loss(workload, model, batches)
        work = [(n, b, f) for n in graph.names if n in ranges for b, f in kinds]
        for name, b, fmt in progress(work, desc="activation sensitivity", quiet=quiet):
            quantizer = make_activation_quantizer(b, fmt, *ranges[name])
            handle = modules[name].register_forward_pre_hook(quantizer)
            try:
                loss = mean_loss(workload, model, batches)
            finally:
                handle.remove()
            out[name][activation_id(b, fmt)] = max(0.0, loss - reference)
    for name in graph.names:
        if name not in ranges:  # integer inputs (token ids) are exact at any activation bits
            out[name] = {activation_id(b, f): 0.0 for b, f in kinds}
    return out


def with_activation_sensitivity(
    table: SensitivityTable, workload: Workload, graph: LayerGraph, a_bits: Iterable[Optional[int]], **settings
) -> SensitivityTable:
    """``table`` with ``layers.*.activations`` measured for the integer activation bits in ``a_bits``
    (``None``, i.e. float activations, needs nothing); layers already measured are kept."""
    wanted = sorted({int(b) for b in a_bits if b is not None})
    missing = [b for b in wanted if any(
        activation_id(b, "int") not in (table.layers[n].activations or {}) for n in table.layers if n in graph.layers)]
    if not missing:
        return table
    measured = measure_activation_sensitivity(workload, graph, missing, **settings)
    layers = {}
    for name, sens in table.layers.items():
        if name in measured:
            sens = sens.model_copy(update={"activations": {**(sens.activations or {}), **measured[name]}})
        layers[name] = sens
    meta = {**table.meta, "activation_sensitivity": {"metric": "loss increase, one layer's input quantized",
                                                      "a_bits": wanted, "probes": settings.get("probes")}}
    return table.model_copy(update={"layers": layers, "meta": meta})
