"""The candidate grid: every option a layer may take, and the stable id of each (``int4-g128``, ``fp16``).

Estimators measure these options and the cost model prices them; neither needs the other, so the
grid has its own module (torch-free apart from :class:`~mpq.quant.QuantSpec`'s module).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import DocumentError
from .quant import QuantSpec
from .schema import NUMBER_FORMATS

DEFAULT_BITS = (2, 3, 4, 5, 6, 8, 16)


def option_id(spec: QuantSpec) -> str:
    """A stable, readable id: ``int4``, ``int4-g128``, ``int3-asym``, ``int4-p50``, ``int8-2:4``, ``fp16``."""
    if spec.format == "float":
        base = "fp16"
    elif spec.format == "int":
        base = f"int{spec.w_bits}"
    else:
        base = spec.format
    parts = [base]
    if spec.format != "float":
        if spec.group_size is not None:
            parts.append(f"g{spec.group_size}")
        if spec.format == "int" and not spec.symmetric:
            parts.append("asym")
        if spec.prune_structure == "2:4":
            parts.append("2:4")
        elif spec.prune_ratio > 0:
            parts.append(f"p{round(spec.prune_ratio * 100):d}")
    if spec.a_bits is not None:
        parts.append(f"a{spec.a_bits}")
    return "-".join(parts)


@dataclass(frozen=True)
class CandidateSet:
    """The grid of options every layer may take (the CLI's ``--bits --group-sizes --formats --prune --a-bits``)."""

    bits: Sequence[int] = DEFAULT_BITS
    group_sizes: Sequence[Optional[int]] = (None,)
    formats: Sequence[str] = ("int",)
    symmetric: Sequence[bool] = (True,)
    prune: Sequence[float | str] = (0.0,)
    a_bits: Sequence[Optional[int]] = (None,)

    def specs(self) -> dict[str, QuantSpec]:
        out: dict[str, QuantSpec] = {}

        def add(spec: QuantSpec) -> None:
            out.setdefault(option_id(spec), spec)

        for a in self.a_bits:
            for b in self.bits:
                if b >= 16:
                    add(QuantSpec(16, None, "float", True, 0.0, "unstructured", a))
                    continue
                for fmt in self.formats:
                    for g in self.group_sizes:
                        for p in self.prune:
                            ratio, structure = (0.5, "2:4") if p == "2:4" else (float(p), "unstructured")
                            if fmt == "int":
                                for sym in self.symmetric:
                                    add(QuantSpec(b, g, "int", sym, ratio, structure, a))
                            else:
                                for name in fp_formats_for(fmt, b):
                                    add(QuantSpec(b, g, name, True, ratio, structure, a))
        if not out:
            raise DocumentError("the candidate set is empty: give at least one bit-width and format")
        return out


def fp_formats_for(fmt: str, bits: int) -> list[str]:
    """``fp`` at 8 bits means fp8 e4m3, at 4 bits fp4 e2m1; explicit names pass through when their width matches."""
    table = {8: ["fp8_e4m3"], 4: ["fp4_e2m1"]}
    if fmt == "fp":
        return table.get(bits, [])
    known = NUMBER_FORMATS.get(fmt)
    return [fmt] if known is not None and known.bits == bits else []
