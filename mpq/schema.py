"""The three documents that cross stage boundaries: sensitivity table, problem and plan.

Each is a versioned pydantic model with ``extra="forbid"`` (except the estimator-specific fields of
a sensitivity layer), finite numbers only, and validators that reject inconsistent combinations
with a message naming the field. ``mpq schema plan|problem|sensitivity`` prints their JSON Schema.
This module is pure pydantic: solvers import it without importing torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, TypeVar

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from .errors import DocumentError

SENSITIVITY_SCHEMA = "mpq.sensitivity/v1"
PROBLEM_SCHEMA = "mpq.problem/v1"
PLAN_SCHEMA = "mpq.plan/v1"

#: Sizes (bits, bytes, BitOps, params, MACs) are exact integers up to this, one value or summed over
#: a whole problem: sums stay inside int64 and exact in float64, so no total can wrap or round.
MAX_SIZE = 2**53


def _no_coercion(value: Any) -> Any:
    """Refuse what lax integer parsing would coerce: ``true``/``false`` and numbers written as strings."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


NonNegInt = Annotated[int, BeforeValidator(_no_coercion), Field(ge=0, le=MAX_SIZE)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]

# ----------------------------------------------------------------------------------------------
# The option vocabulary, defined once: number formats, prune structures, constraints


@dataclass(frozen=True)
class NumberFormat:
    """A weight number format as the size convention of :mod:`mpq.sizes` counts it.

    ``bits`` is the element width the format fixes (``None``: ``w_bits`` chooses, as for ``int``);
    each scale costs ``scale_bits``, one per ``default_block`` inputs when an option gives no group
    size (``None``: one per output channel); ``zero_point``: asymmetric grids store a ``w_bits``
    zero-point per scale. ``float`` keeps the layer in 16-bit floating point with no scales.
    """

    name: str
    bits: Optional[int]
    scale_bits: int
    default_block: Optional[int] = None
    zero_point: bool = False
    tensor_scale_bits: int = 0  #: a second-level scale per tensor (NVFP4's fp32 global scale)


#: Weight formats by name, in a fixed order (the columnar form stores a format as its index here).
NUMBER_FORMATS: dict[str, NumberFormat] = {}


def register_number_format(fmt: NumberFormat) -> NumberFormat:
    """Add a weight format to the vocabulary (once); its fake-quantizer registers in :mod:`mpq.quant`."""
    from .registry import register

    return register(NUMBER_FORMATS, fmt.name, fmt, kind="number format")


for _fmt in (
    NumberFormat("int", None, 16, None, zero_point=True),
    NumberFormat("float", 16, 0),
    NumberFormat("fp8_e4m3", 8, 8, 32),  # OCP MX: 8-bit E8M0 block scales over 32 elements
    NumberFormat("fp8_e5m2", 8, 8, 32),
    NumberFormat("fp4_e2m1", 4, 8, 32),
    NumberFormat("nvfp4", 4, 8, 16, tensor_scale_bits=32),  # NVIDIA: fp8 e4m3 scale per 16 elements + fp32 per tensor
):
    register_number_format(_fmt)

#: Prune structures, in a fixed order (the columnar form stores a structure as its index here),
#: and the prune ratio each implies (``None``: any ratio).
PRUNE_STRUCTURES: dict[str, Optional[float]] = {"unstructured": None, "2:4": 0.5}


@dataclass(frozen=True)
class Resource:
    """A budget: the constraint that caps it, the option field it sums, and the plan total it bounds."""

    constraint: str
    option_field: str
    total: str
    per_param: bool = False  # the cap is per parameter (average bits): multiply by total params
    integral: bool = True  # exact integer amounts (a frontier axis); latency is a float


#: Constraint name -> its resource. Every constraint of a problem or plan is one of these.
RESOURCES: dict[str, Resource] = {
    r.constraint: r
    for r in (
        Resource("max_bytes", "bytes", "bytes"),
        Resource("max_avg_bits", "bits", "avg_bits", per_param=True),
        Resource("max_bitops", "bitops", "bitops"),
        Resource("max_latency_ms", "latency_ms", "latency_ms", integral=False),
    )
}

#: Frontier axis (an integral option field) -> the constraint on it.
AXES: dict[str, str] = {r.option_field: r.constraint for r in RESOURCES.values() if r.integral}


class _Doc(BaseModel):
    # defer_build: each model builds its validator when first used, so a command pays only for the
    # documents it reads (`mpq solve` on JSON validates none per option; see mpq/problem_json.py)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=False, defer_build=True)


class ModelRef(_Doc):
    """Which model a document was computed for."""

    name: str = ""
    fingerprint: Optional[str] = None


# ----------------------------------------------------------------------------------------------
# Sensitivity table


class LayerSensitivity(BaseModel):
    """One layer's sensitivity. ``score`` is what the cost model uses; estimator fields sit beside it."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, defer_build=True)

    score: float
    params: NonNegInt
    stderr: Optional[NonNegFloat] = None
    options: Optional[dict[str, float]] = Field(
        default=None, description="measured distortion per option id, for estimators that measure them"
    )
    activations: Optional[dict[str, float]] = Field(
        default=None,
        description="loss increase with only this layer's input quantized, per activation id "
        "(a8, a4: per-tensor int as apply does; a8-token: per-token int; a8-fp8); "
        "the cost model adds it to the weight distortion of options with those a_bits",
    )

    @model_validator(mode="after")
    def _extras_are_finite_numbers(self) -> "LayerSensitivity":
        for key, value in (self.model_extra or {}).items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"field {key!r} must be a finite number, got {value!r}")
        return self


class PairOption(_Doc):
    option_a: str
    option_b: str
    distortion: float


class SensitivityPair(_Doc):
    """An inter-layer dependency: extra loss when both layers are perturbed together."""

    a: str
    b: str
    score: float
    options: list[PairOption] = Field(default_factory=list)


class SensitivityTable(_Doc):
    schema_: Literal["mpq.sensitivity/v1"] = Field(SENSITIVITY_SCHEMA, alias="schema")
    estimator: str
    model: ModelRef = Field(default_factory=ModelRef)
    layers: dict[str, LayerSensitivity]
    pairs: list[SensitivityPair] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, defer_build=True)

    @model_validator(mode="after")
    def _pairs_name_layers(self) -> "SensitivityTable":
        if not self.layers:
            raise ValueError("layers: the table has no layer")
        for i, p in enumerate(self.pairs):
            for side in ("a", "b"):
                if getattr(p, side) not in self.layers:
                    raise ValueError(f"pairs[{i}].{side}: unknown layer {getattr(p, side)!r}")
        return self


# ----------------------------------------------------------------------------------------------
# Problem


def _known_format(name: str) -> str:
    if name not in NUMBER_FORMATS:
        raise ValueError(f"unknown format {name!r}; expected one of {list(NUMBER_FORMATS)}")
    return name


def _known_structure(name: str) -> str:
    if name not in PRUNE_STRUCTURES:
        raise ValueError(f"unknown prune structure {name!r}; expected one of {list(PRUNE_STRUCTURES)}")
    return name


class _OneOf:
    """JSON Schema ``enum`` of a registry's names, read when the schema is generated (formats can be added)."""

    def __init__(self, names: Mapping[str, Any]):
        self.names = names

    def __get_pydantic_json_schema__(self, core_schema, handler):
        return {**handler(core_schema), "enum": list(self.names)}


#: A weight format name from :data:`NUMBER_FORMATS`; a prune structure from :data:`PRUNE_STRUCTURES`.
FormatName = Annotated[str, AfterValidator(_known_format), _OneOf(NUMBER_FORMATS)]
PruneStructureName = Annotated[str, AfterValidator(_known_structure), _OneOf(PRUNE_STRUCTURES)]


class StorageArgs(_Doc):
    """How one layer's weight is stored: the fields an ``Option``, a ``PlanLayer`` and a ``QuantSpec`` share.

    Like compressed-tensors' ``QuantizationArgs``, this is the one place the storage fields and the
    rules on their combinations live; every document that stores a layer builds on it.
    """

    w_bits: int = Field(ge=1, le=32)
    group_size: Optional[int] = Field(default=None, ge=1)
    format: FormatName = "int"
    symmetric: bool = True
    prune_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    prune_structure: PruneStructureName = "unstructured"
    a_bits: Optional[int] = Field(default=None, ge=1, le=32)

    @model_validator(mode="after")
    def _storage_consistent(self):
        # runs once per option of every request the service parses: an int, unstructured option costs two comparisons
        if self.format == "int" and self.prune_structure == "unstructured":
            return self
        want = NUMBER_FORMATS[self.format].bits
        if want is not None and self.w_bits != want:
            raise ValueError(f"{self._label()}format {self.format!r} stores {want} bits, but w_bits is {self.w_bits}")
        ratio = PRUNE_STRUCTURES[self.prune_structure]
        if ratio is not None and self.prune_ratio != ratio:
            raise ValueError(f"{self._label()}prune_structure {self.prune_structure!r} means prune_ratio {ratio}, "
                             f"got {self.prune_ratio}")
        return self

    def _label(self) -> str:
        """How an error names the entry (``option '4b': ``); the bare storage fields have no name."""
        return ""


#: The storage fields, in document order.
STORAGE_FIELDS: tuple[str, ...] = tuple(StorageArgs.model_fields)


class _OptionId(_Doc):
    id: str = Field(min_length=1)


class Option(StorageArgs, _OptionId):
    """One candidate way to store a layer, with its predicted cost."""

    bits: Optional[NonNegInt] = Field(
        default=None, description="exact weight bits (kept weights x w_bits, plus scales, zero-points and prune masks, as mpq/sizes.py counts them); bytes = ceil(bits/8). Defaults to 8*bytes"
    )
    bytes: NonNegInt
    bitops: Optional[NonNegInt] = None
    latency_ms: Optional[NonNegFloat] = None
    distortion: float

    def _label(self) -> str:
        return f"option {self.id!r}: "

    @model_validator(mode="after")
    def _bytes_of_bits(self) -> "Option":
        bits = self.bits
        if bits is None:
            self.bits = 8 * self.bytes
        elif (bits + 7) // 8 != self.bytes:
            raise ValueError(f"option {self.id!r}: bytes must be ceil(bits/8) = {-(-bits // 8)}, got {self.bytes}")
        return self


class ProblemLayer(_Doc):
    """A decision group: one layer, or (with ``module`` and ``channels``) a slice of a layer's output channels,
    or an attention module's KV cache (``<attention module>.kv_cache``, options ``kv16``/``kv8``/``kv4``,
    ``params`` = cached numbers at the planned context length, ``shape`` = [tokens, numbers per token])."""

    name: str = Field(min_length=1, description="qualified module name; a name ending in '.kv_cache' is the KV cache "
                      "of that attention module (its bytes are the cache's at the planned context, see mpq.kv_cache)")
    params: NonNegInt
    macs: NonNegInt = 0
    shape: Optional[list[Annotated[int, Field(ge=1)]]] = None
    module: Optional[str] = Field(default=None, description="module holding the weights, when the group is a slice of it")
    channels: Optional[tuple[NonNegInt, NonNegInt]] = Field(default=None, description="[start, stop) output channels of module")
    options: list[Option] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_options(self) -> "ProblemLayer":
        if len({o.id for o in self.options}) != len(self.options):
            seen: set[str] = set()
            for o in self.options:
                if o.id in seen:
                    raise ValueError(f"layer {self.name!r}: option id {o.id!r} appears twice")
                seen.add(o.id)
        if self.channels is not None and not self.channels[0] < self.channels[1]:
            raise ValueError(f"layer {self.name!r}: channels must be [start, stop) with start < stop, got {list(self.channels)}")
        return self

    def option(self, option_id: str) -> Option:
        for o in self.options:
            if o.id == option_id:
                return o
        raise KeyError(option_id)


class ProblemPair(_Doc):
    """Extra distortion added when layer ``a`` takes ``option_a`` and layer ``b`` takes ``option_b``."""

    a: str
    option_a: str
    b: str
    option_b: str
    distortion: float


class Constraints(_Doc):
    max_bytes: Optional[PosFloat] = None
    max_avg_bits: Optional[PosFloat] = None
    max_bitops: Optional[PosFloat] = None
    max_latency_ms: Optional[PosFloat] = None

    def active(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


def check_size_sums(layers: "list[ProblemLayer]") -> None:
    """Refuse sizes whose sum over the layers (each at its largest option) could pass ``MAX_SIZE``, naming the field."""
    totals = {"params": 0, "macs": 0, "bits": 0, "bitops": 0}
    for l in layers:
        totals["params"] += l.params
        totals["macs"] += l.macs
        totals["bits"] += max(o.bits or 0 for o in l.options)
        totals["bitops"] += max(o.bitops or 0 for o in l.options)
    for field, total in totals.items():
        if total > MAX_SIZE:
            where = f"layers.*.{field}" if field in ("params", "macs") else f"layers.*.options.*.{field}"
            raise ValueError(f"{where}: summed over the layers it can reach {total}, over the limit of 2**53 "
                             f"({MAX_SIZE}) that keeps every total exact")


class Problem(_Doc):
    schema_: Literal["mpq.problem/v1"] = Field(PROBLEM_SCHEMA, alias="schema")
    layers: list[ProblemLayer] = Field(min_length=1)
    ties: list[list[str]] = Field(default_factory=list)
    pairs: list[ProblemPair] = Field(default_factory=list)
    constraints: Constraints
    model: Optional[ModelRef] = None
    estimator: Optional[str] = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, defer_build=True)

    @model_validator(mode="after")
    def _references(self) -> "Problem":
        by_name: dict[str, ProblemLayer] = {}
        for l in self.layers:
            if l.name in by_name:
                raise ValueError(f"layers: layer name {l.name!r} appears twice")
            by_name[l.name] = l
        tied: set[str] = set()
        for i, tie in enumerate(self.ties):
            if len(tie) < 2:
                raise ValueError(f"ties[{i}]: a tie needs at least two layers, got {tie}")
            for name in tie:
                if name not in by_name:
                    raise ValueError(f"ties[{i}]: unknown layer {name!r}")
                if name in tied:
                    raise ValueError(f"ties[{i}]: layer {name!r} is in more than one tie; merge those ties")
                tied.add(name)
            common = set.intersection(*({o.id for o in by_name[n].options} for n in tie))
            if not common:
                raise ValueError(f"ties[{i}]: layers {tie} share no option id, so they cannot take the same option")
        for i, p in enumerate(self.pairs):
            for side, opt in (("a", "option_a"), ("b", "option_b")):
                name, oid = getattr(p, side), getattr(p, opt)
                if name not in by_name:
                    raise ValueError(f"pairs[{i}].{side}: unknown layer {name!r}")
                if oid not in {o.id for o in by_name[name].options}:
                    raise ValueError(f"pairs[{i}].{opt}: layer {name!r} has no option {oid!r}")
            if p.a == p.b:
                raise ValueError(f"pairs[{i}]: a pair needs two different layers, got {p.a!r} twice")
        if not self.constraints.active():
            raise ValueError(
                "constraints: the problem sets no constraint; set at least one of "
                "max_bytes, max_avg_bits, max_bitops, max_latency_ms"
            )
        check_size_sums(self.layers)
        if self.constraints.max_avg_bits is not None and self.total_params == 0:
            raise ValueError("constraints.max_avg_bits: the layers have 0 params in total, so an average-bits budget "
                             "is undefined; use max_bytes instead")
        return self

    def layer(self, name: str) -> ProblemLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    @property
    def total_params(self) -> int:
        return sum(l.params for l in self.layers)


# ----------------------------------------------------------------------------------------------
# Plan


class _PlanLayerHead(_Doc):
    name: str
    module: Optional[str] = None
    channels: Optional[tuple[NonNegInt, NonNegInt]] = None
    params: NonNegInt
    shape: Optional[list[Annotated[int, Field(ge=1)]]] = None
    option: str


class PlanLayer(StorageArgs, _PlanLayerHead):
    """One layer of a plan: the option chosen for it, with the option's storage fields and costs."""

    bits: Optional[NonNegInt] = None
    bytes: NonNegInt
    bitops: Optional[NonNegInt] = None
    latency_ms: Optional[NonNegFloat] = None
    distortion: float

    def _label(self) -> str:
        return f"layer {self.name!r} (option {self.option!r}): "

    @property
    def target(self) -> str:
        """The module whose weights this entry quantizes."""
        return self.module or self.name


class Totals(_Doc):
    bytes: NonNegInt
    avg_bits: NonNegFloat
    bitops: Optional[NonNegInt] = None
    latency_ms: Optional[NonNegFloat] = None
    distortion: float
    scale_overhead: bool = Field(True, description="False when sizes exclude scales and zero-points (for comparison with tools that omit them)")


class SolverInfo(_Doc):
    name: str
    status: Literal["optimal", "feasible"]
    objective: float
    bound: Optional[float] = None
    gap: Optional[NonNegFloat] = None
    seconds: NonNegFloat = 0.0


class Provenance(_Doc):
    estimator: Optional[str] = None
    target: Optional[str] = Field(default=None, description="the export target the plan was made for (mpq plan --target)")
    mpq_version: str = ""
    model: Optional[ModelRef] = None
    created: str = ""


class Plan(_Doc):
    schema_: Literal["mpq.plan/v1"] = Field(PLAN_SCHEMA, alias="schema")
    layers: list[PlanLayer] = Field(min_length=1)
    totals: Totals
    constraints: dict[str, float] = Field(default_factory=dict)
    solver: SolverInfo
    provenance: Provenance = Field(default_factory=Provenance)

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, defer_build=True)

    @field_validator("constraints")
    @classmethod
    def _known_constraints(cls, v: dict[str, float]) -> dict[str, float]:
        known = set(Constraints.model_fields)
        for k, val in v.items():
            if k not in known:
                raise ValueError(f"unknown constraint {k!r}; expected one of {sorted(known)}")
            if not val > 0:
                raise ValueError(f"constraint {k!r} must be positive, got {val}")
        return v

    @model_validator(mode="after")
    def _unique_layers(self) -> "Plan":
        seen: set[str] = set()
        for l in self.layers:
            if l.name in seen:
                raise ValueError(f"layers: layer {l.name!r} appears twice")
            seen.add(l.name)
        return self

    def layer(self, name: str) -> PlanLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)


# ----------------------------------------------------------------------------------------------
# Latency table

LATENCY_SCHEMA = "mpq.latency/v1"


class LatencyEntry(_Doc):
    """Measured (or user-written) time of one layer shape at one option on one device."""

    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, description="weight shape, output channels first")
    option: str = Field(min_length=1, description="option id, as in a problem (int8-a8, fp16, ...)")
    ms: NonNegFloat = Field(description="median milliseconds of one call")
    spread_ms: NonNegFloat = Field(0.0, description="half the 10th-90th percentile range of the repeats")
    input: Optional[list[Annotated[int, Field(ge=1)]]] = Field(
        None, description="input shape the layer was timed on; a layer seeing another input scales ms by the element ratio")
    kernel: Optional[str] = Field(None, description="what ran: a torchao config, or float when no kernel exists for the option")
    repeats: Optional[int] = Field(None, ge=1)


class LatencyModelTiming(_Doc):
    """Whole-model timing of the profiled model: what the per-layer sum leaves out (activations, attention, ...)."""

    fingerprint: Optional[str] = None
    float_ms: NonNegFloat = Field(description="median end-to-end milliseconds of one calibration batch in float")
    spread_ms: NonNegFloat = 0.0
    overhead_ms: float = Field(description="float_ms minus the sum of the planned layers' float ms")


class LatencyTable(_Doc):
    """``mpq.latency/v1``: per layer shape and option, milliseconds on one device (``mpq profile``)."""

    schema_: Literal["mpq.latency/v1"] = Field(LATENCY_SCHEMA, alias="schema")
    device: str = "cpu"
    device_name: str = ""
    torch: str = ""
    threads: Optional[int] = None
    entries: list[LatencyEntry] = Field(min_length=1)
    models: dict[str, LatencyModelTiming] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, defer_build=True)


# ----------------------------------------------------------------------------------------------
# Reading and writing

DOCUMENTS: dict[str, type[BaseModel]] = {"sensitivity": SensitivityTable, "problem": Problem, "plan": Plan, "latency": LatencyTable}
_BY_SCHEMA = {SENSITIVITY_SCHEMA: SensitivityTable, PROBLEM_SCHEMA: Problem, PLAN_SCHEMA: Plan, LATENCY_SCHEMA: LatencyTable}
D = TypeVar("D", bound=BaseModel)


def json_schema(kind: str) -> dict:
    """The published JSON Schema of one document kind (``plan``, ``problem`` or ``sensitivity``)."""
    try:
        model = DOCUMENTS[kind]
    except KeyError:
        raise DocumentError(f"unknown document kind {kind!r}; expected one of {sorted(DOCUMENTS)}") from None
    return model.model_json_schema(by_alias=True)


def format_validation_error(err: ValidationError, what: str) -> str:
    lines = [f"invalid {what}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)


def parse_document(data: Any, model: type[D], source: str = "document") -> D:
    """Validate ``data`` (a dict) as ``model``; a wrong or unknown ``schema`` version is named explicitly."""
    if not isinstance(data, dict):
        raise DocumentError(f"invalid {source}: expected a JSON object, got {type(data).__name__}")
    expected = model.model_fields["schema_"].default
    got = data.get("schema")
    if got is None:
        raise DocumentError(f"invalid {source}: schema: field required (expected {expected!r})")
    if not isinstance(got, str):
        raise DocumentError(f"invalid {source}: schema: expected the string {expected!r}, got {json.dumps(got)[:60]}")
    if got != expected:
        hint = f" (that is a {_BY_SCHEMA[got].__name__} document)" if got in _BY_SCHEMA else ""
        raise DocumentError(f"invalid {source}: schema: unsupported version {got!r}{hint}; expected {expected!r}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise DocumentError(format_validation_error(e, source)) from None


def load_document(path: str | Path, model: type[D]) -> D:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentError(f"cannot read {path}: {e.strerror}") from None
    return document_from_bytes(data, model, str(path))


def document_from_bytes(data: bytes, model: type[D], source: str) -> D:
    """Validate a document's bytes as ``model``; ``source`` names it in errors (a file read once, even a pipe)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(f"invalid {source}: not UTF-8 text (byte {e.start}); a document is UTF-8 JSON") from None
    try:  # pydantic's own JSON parser is the fast path; a failure is re-read below for the error that names the field
        doc = model.model_validate_json(text)
        if "schema_" in doc.model_fields_set:  # the version must be written, not defaulted
            return doc
    except (ValidationError, RecursionError):
        pass
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise DocumentError(f"invalid {source}: the JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise DocumentError(f"invalid {source}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return parse_document(parsed, model, source=source)


def dump_document(doc: BaseModel) -> str:
    return doc.model_dump_json(by_alias=True, indent=2) + "\n"


def save_document(doc: BaseModel, path: str | Path, what: str = "output") -> None:
    """Write atomically to a regular file (a crash never leaves a truncated document), directly to a device or pipe."""
    from .output import write_output

    write_output(path, dump_document(doc), what=what)
