"""Measured latency as a planned cost: ``mpq profile`` times every layer at every candidate option
with the kernel that would run it, and ``mpq plan --latency-table`` prices options from the table.

Kernels (``kernel_for``): linear layers run torchao's kernels where they exist on the device:
int8 weight-only (``Int8WeightOnlyConfig``), int8 dynamic activations with int8 weights
(``Int8DynamicActivationInt8WeightConfig``), int1-7 weights alone or with int8 dynamic
activations (``IntxWeightOnlyConfig``, ``Int8DynamicActivationIntxWeightConfig``), fp8 weights
(``Float8WeightOnlyConfig``; with fp8 dynamic activations on CUDA). Every other option (conv
layers, pruning, asymmetric grids, a_bits other than 8, fp4) runs the float module, and its
entry says ``kernel: float``: the option saves memory but no time on this device.

The table is keyed by weight shape and option id (with the input shape it was timed on), so it
carries over to other models on the same device; a layer that sees another input scales the time
by the ratio of input elements. The additive model predicts a plan's end-to-end time as the sum
of its layers' times plus the profiled model's overhead (its float end-to-end time minus the sum
of its layers' float times: activations, attention, pooling), so ``--budget latency_ms=X`` is an
end-to-end budget and the layers get ``X - overhead``.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from .errors import DocumentError, WorkloadError
from .graph import LayerGraph
from .quant import QuantSpec
from .schema import LatencyEntry, LatencyModelTiming, LatencyTable, Plan, load_document
from .workload import Workload, call_model

FLOAT_KERNEL = "float"


# ----------------------------------------------------------------------------------------------
# kernels


@dataclass(frozen=True)
class Kernel:
    """What runs one option of one layer: ``config`` is a torchao config factory, or None for the float module."""

    name: str
    config: Optional[Callable[[], Any]] = None

    def build(self, module: nn.Module) -> tuple[nn.Module, str]:
        """A copy of ``module`` running this kernel, and the kernel's name (float if torchao refuses)."""
        if self.config is None:
            return module, FLOAT_KERNEL
        from torchao.quantization import quantize_

        m = copy.deepcopy(module)
        try:
            quantize_(m, self.config())
            with torch.no_grad():  # some kernels only fail on first call
                m(torch.zeros(1, m.in_features, dtype=m.weight.dtype, device=m.weight.device))
        except Exception as e:  # torchao refuses shapes and devices in many ways; time the float module then
            return module, f"{FLOAT_KERNEL} (torchao {self.name}: {type(e).__name__})"
        return m, f"torchao.{self.name}"


def _torchao() -> Any:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization as tq
        return tq
    except Exception:  # not installed, or its native extensions do not load here
        return None


def kernel_for(module: nn.Module, spec: QuantSpec, device: torch.device) -> Kernel:
    """The kernel that runs ``spec`` on ``module`` on ``device`` (see the module docstring)."""
    if spec.format == "float" or type(module) is not nn.Linear or spec.prune_ratio > 0:
        return Kernel(FLOAT_KERNEL)
    tq = _torchao()
    if tq is None:
        return Kernel(FLOAT_KERNEL)
    from torchao.quantization.granularity import PerAxis, PerGroup

    gran = PerAxis(0) if spec.group_size is None else PerGroup(spec.group_size)
    g = "" if spec.group_size is None else f", group {spec.group_size}"
    if spec.format == "int" and spec.symmetric and spec.w_bits <= 8:
        dtype = getattr(torch, f"int{spec.w_bits}")
        if spec.a_bits is None:
            if spec.w_bits == 8 and spec.group_size is None:
                return Kernel("Int8WeightOnlyConfig", tq.Int8WeightOnlyConfig)
            return Kernel(f"IntxWeightOnlyConfig(int{spec.w_bits}{g})", lambda: tq.IntxWeightOnlyConfig(weight_dtype=dtype, granularity=gran))
        if spec.a_bits == 8:
            if spec.w_bits == 8 and spec.group_size is None:
                return Kernel("Int8DynamicActivationInt8WeightConfig", tq.Int8DynamicActivationInt8WeightConfig)
            return Kernel(f"Int8DynamicActivationIntxWeightConfig(int{spec.w_bits}{g})",
                          lambda: tq.Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=gran))
    if spec.format == "fp8_e4m3":
        if spec.a_bits is None:
            return Kernel("Float8WeightOnlyConfig", tq.Float8WeightOnlyConfig)
        if spec.a_bits == 8 and device.type == "cuda":
            return Kernel("Float8DynamicActivationFloat8WeightConfig", tq.Float8DynamicActivationFloat8WeightConfig)
    return Kernel(FLOAT_KERNEL)


# ----------------------------------------------------------------------------------------------
# timing


def time_call(fn: Callable[[], Any], device: torch.device, *, warmup: int = 3, repeats: int = 15) -> tuple[float, float]:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup``, and half the 10-90% range."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        sync()
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t) * 1e3)
    if len(times) < 2:
        return times[0], 0.0
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), (deciles[8] - deciles[0]) / 2


def layer_inputs(model: nn.Module, graph: LayerGraph, inputs: Any) -> dict[str, torch.Tensor]:
    """The first input each planned layer receives in one forward pass on ``inputs``."""
    seen: dict[str, torch.Tensor] = {}

    def grab(name):
        def hook(module, args):
            if name not in seen and args and isinstance(args[0], torch.Tensor):
                seen[name] = args[0].detach()
        return hook

    handles = [graph.module(n).register_forward_pre_hook(grab(n)) for n in graph.names]
    try:
        with torch.no_grad():
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


@contextlib.contextmanager
def threads_set(threads: Optional[int]):
    """Run with ``threads`` intra-op CPU threads (None: leave torch's setting), restored on exit."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise WorkloadError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkloadError(f"device {name!r}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise WorkloadError(f"device {name!r}: expected cpu or cuda")
    return device


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def profile(
    workload: Workload,
    graph: LayerGraph,
    specs: Mapping[str, QuantSpec],
    *,
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 15,
    threads: Optional[int] = None,
) -> LatencyTable:
    """Time every layer of ``graph`` at every option of ``specs`` on the first calibration batch, and the
    whole model, with ``threads`` CPU threads (default: torch's current setting)."""
    with threads_set(threads):
        return _profile(workload, graph, specs, _device(device), warmup, repeats)


def _profile(workload, graph, specs, dev, warmup, repeats) -> LatencyTable:
    if warmup < 0 or repeats < 1:
        raise WorkloadError(f"profile: warmup must be >= 0 and repeats >= 1, got {warmup} and {repeats}")
    model = workload.model
    home = next(model.parameters()).device
    model.to(dev).eval()
    try:
        batch = _to(workload.batches[0][0], dev)
        inputs = layer_inputs(model, graph, batch)
        measured: dict[tuple, tuple[float, float, str]] = {}
        entries, float_sum = [], 0.0
        for name in graph.names:
            if name not in inputs:
                raise WorkloadError(f"profile: layer {name!r} received no tensor input on the first calibration batch")
            module, x = graph.module(name), inputs[name]
            shape, in_shape = list(graph.layers[name].shape), list(x.shape)
            for oid, spec in specs.items():
                kernel = kernel_for(module, spec, dev)
                key = (tuple(shape), tuple(in_shape), kernel.name)
                if key not in measured:
                    run, used = kernel.build(module)
                    ms, spread = time_call(lambda: run(x), dev, warmup=warmup, repeats=repeats)
                    measured[key] = (ms, spread, used)
                ms, spread, used = measured[key]
                if spec.format == "float" and spec.a_bits is None:
                    float_sum += ms
                entries.append(LatencyEntry(shape=shape, option=oid, ms=ms, spread_ms=spread, input=in_shape, kernel=used, repeats=repeats))
            if not any(s.format == "float" and s.a_bits is None for s in specs.values()):
                run, _ = Kernel(FLOAT_KERNEL).build(module)
                float_sum += time_call(lambda: run(x), dev, warmup=warmup, repeats=repeats)[0]
        whole, whole_spread = time_call(lambda: call_model(model, batch), dev, warmup=warmup, repeats=repeats)
    finally:
        model.to(home)
    unique = {(tuple(e.shape), tuple(e.input or ()), e.option): e for e in entries}  # equal shapes share a row
    timing = LatencyModelTiming(fingerprint=workload.fingerprint(), float_ms=whole, spread_ms=whole_spread, overhead_ms=whole - float_sum)
    return LatencyTable(
        device=dev.type, device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        torch=torch.__version__, threads=torch.get_num_threads(), entries=list(unique.values()), models={workload.name: timing},
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


# ----------------------------------------------------------------------------------------------
# reading user tables


def _dims(text: str, what: str, row: int, path: Path) -> list[int]:
    try:
        dims = [int(d) for d in text.lower().replace("×", "x").split("x") if d.strip()]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise DocumentError(f"{path}: row {row}: {what} must be positive integers joined by x (e.g. 64x512), got {text!r}")
    return dims


def load_latency_table(path: str | Path) -> LatencyTable:
    """An ``mpq.latency/v1`` JSON document, or a CSV with columns ``shape,option,ms`` (optional
    ``spread_ms``, ``input``, ``kernel``; shapes written ``64x512``)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return load_document(path, LatencyTable)
    try:
        text = path.read_text()
    except OSError as e:
        raise DocumentError(f"cannot read {path}: {e.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"shape", "option", "ms"} - set(reader.fieldnames or [])
    if missing:
        raise DocumentError(f"{path}: the CSV header must name shape, option and ms; missing {sorted(missing)}")
    entries = []
    for i, row in enumerate(reader, start=2):
        try:
            ms = float(row["ms"])
            spread = float(row.get("spread_ms") or 0.0)
        except ValueError:
            raise DocumentError(f"{path}: row {i}: ms and spread_ms must be numbers, got {row['ms']!r}, {row.get('spread_ms')!r}") from None
        if not (ms >= 0 and spread >= 0) or ms == float("inf"):
            raise DocumentError(f"{path}: row {i}: ms and spread_ms must be finite and >= 0, got {ms}, {spread}")
        entries.append(LatencyEntry(
            shape=_dims(row["shape"], "shape", i, path), option=row["option"].strip(), ms=ms, spread_ms=spread,
            input=_dims(row["input"], "input", i, path) if row.get("input") else None, kernel=row.get("kernel") or None,
        ))
    if not entries:
        raise DocumentError(f"{path}: the CSV has no rows")
    return LatencyTable(entries=entries)


# ----------------------------------------------------------------------------------------------
# pricing a problem's options


class LatencyError(DocumentError):
    """The latency table cannot price a layer's option."""


def _numel(shape: Optional[Sequence[int]]) -> int:
    n = 1
    for d in shape or ():
        n *= int(d)
    return n


def option_latencies(
    table: LatencyTable,
    graph: LayerGraph,
    option_ids: Sequence[str],
    inputs: Optional[Mapping[str, Sequence[int]]] = None,
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{layer: {option: (ms, spread_ms)}}`` for every layer of ``graph`` and option id.

    An entry timed on the layer's own input shape wins; then one with no input shape; else the
    closest input, scaled by the ratio of input elements. A layer shape or option the table does
    not have is an error naming both.
    """
    index: dict[tuple, list[LatencyEntry]] = {}
    for e in table.entries:
        index.setdefault((tuple(e.shape), e.option), []).append(e)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in graph.names:
        shape = tuple(graph.layers[name].shape)
        seen = list(inputs.get(name, ())) if inputs else None
        row = {}
        for oid in option_ids:
            found = index.get((shape, oid))
            if not found:
                have = sorted({e.option for e in table.entries if tuple(e.shape) == shape})
                raise LatencyError(
                    f"latency table has no entry for layer {name!r} (shape {'x'.join(map(str, shape))}) at option {oid!r}; "
                    + (f"it has {have} for that shape" if have else "it has no entry for that shape")
                    + ": profile this model with the same candidate options (mpq profile) or add the row")
            exact = [e for e in found if seen is not None and e.input == seen]
            plain = [e for e in found if e.input is None]
            if exact or plain or seen is None:
                e = (exact or plain or found)[0]
                row[oid] = (e.ms, e.spread_ms)
            else:
                e = min(found, key=lambda e: abs(_numel(e.input) - _numel(seen)))
                ratio = _numel(seen) / _numel(e.input)
                row[oid] = (e.ms * ratio, e.spread_ms * ratio)
        out[name] = row
    return out


def model_overhead(table: LatencyTable, workload: Workload) -> Optional[LatencyModelTiming]:
    """The profiled whole-model timing of this workload, when the table has it for the same weights."""
    timing = table.models.get(workload.name)
    if timing is None or (timing.fingerprint and timing.fingerprint != workload.fingerprint()):
        return None
    return timing


def input_shapes(workload: Workload, graph: LayerGraph) -> dict[str, list[int]]:
    """Each planned layer's input shape on the first calibration batch."""
    return {n: list(x.shape) for n, x in layer_inputs(workload.model, graph, workload.batches[0][0]).items()}


# ----------------------------------------------------------------------------------------------
# measuring a plan end to end


def realize(model: nn.Module, plan: Plan, device: str = "cpu") -> nn.Module:
    """A copy of ``model`` whose planned layers run the kernels ``profile`` timed (float where none exists)."""
    dev = _device(device)
    model = copy.deepcopy(model).to(dev).eval()
    for layer in plan.layers:
        if layer.channels is not None:
            raise WorkloadError(f"plan layer {layer.name!r} is a channel slice; a kernel runs whole layers")
        module = model.get_submodule(layer.target)
        run, _ = kernel_for(module, QuantSpec.of(layer), dev).build(module)
        if run is not module:
            model.set_submodule(layer.target, run)
    return model


def measure_latency(model: nn.Module, workload: Workload, device: str = "cpu", *, warmup: int = 3, repeats: int = 15,
                    threads: Optional[int] = None) -> tuple[float, float]:
    """Median end-to-end milliseconds (and spread) of ``model`` on the first calibration batch."""
    dev = _device(device)
    batch = _to(workload.batches[0][0], dev)
    with threads_set(threads):
        return time_call(lambda: call_model(model, batch), dev, warmup=warmup, repeats=repeats)
