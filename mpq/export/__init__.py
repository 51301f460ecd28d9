"""Exporters: a plan -> the configuration a quantizer reads, one module per target.

Targets register themselves with :func:`register_exporter`; every public module in this package
is imported on first use, so adding a target is one new file (out of tree: a class published in the
``mpq.exporters`` entry point group). ``export_plan(plan, "gptqmodel")``
returns an :class:`~mpq.export.base.Export`; :func:`write_export` writes its files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .. import registry
from ..errors import UnknownName
from ..output import write_output
from ..schema import Plan
from .base import Export, ExportFile, Exporter, Support, keep_float

EXPORTERS: dict[str, type[Exporter]] = {}
#: Register an exporter class under its ``name`` (once).
register_exporter = registry.registrar(EXPORTERS, "exporter")


def _discover() -> None:
    """Built-in targets (every public module here) and ``mpq.exporters`` entry-point plugins, once per process."""
    registry.load(__name__, "mpq.exporters", EXPORTERS, "exporter")


def available_targets() -> list[str]:
    _discover()
    return sorted(EXPORTERS)


def get_exporter_class(target: str) -> type[Exporter]:
    _discover()
    try:
        return EXPORTERS[target]
    except KeyError:
        raise UnknownName("export target", target, list(EXPORTERS)) from None


def get_exporter(target: str, **options: Any) -> Exporter:
    return get_exporter_class(target)(**options)


def export_plan(plan: Plan, target: str, *, keep_float_layers: Iterable[str] = (), **options: Any) -> Export:
    """The ``target`` configuration for ``plan``; raises ExportError when the target cannot express it."""
    exporter = get_exporter(target, **options)
    plan, notes = keep_float(plan, keep_float_layers)
    result = exporter.export(plan)
    result.notes[:0] = notes
    return result


def write_export(result: Export, output: str | Path) -> list[Path]:
    """Write every file atomically: the main one at ``output``, the others beside it (same stem, own suffix)."""
    from ..output import is_special

    output = Path(output)
    if is_special(output):  # a device or pipe takes the main file only: nothing is created beside /dev/null
        result.notes.extend(f"{f.suffix} file not written: {output} is not a regular file" for f in result.files[1:])
        return [write_output(output, result.files[0].content, what="-o")]
    main_suffix = result.files[0].suffix
    stem = output.name[: -len(main_suffix)] if output.name.endswith(main_suffix) else output.stem
    paths = []
    for i, f in enumerate(result.files):
        path = output if i == 0 else output.with_name(stem + f.suffix)
        paths.append(write_output(path, f.content, what="-o"))
    return paths


def default_output(plan_path: str | Path, result: Export) -> Path:
    plan_path = Path(plan_path)
    return plan_path.with_name(f"{plan_path.stem}.{result.target}{result.files[0].suffix}")


__all__ = [
    "EXPORTERS", "Export", "ExportFile", "Exporter", "Support", "available_targets", "default_output",
    "export_plan", "get_exporter", "get_exporter_class", "register_exporter", "write_export",
]


# ``mpq.export(...)`` calls :func:`mpq.api.export` (this module stays importable as before).
from .._entry import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "export")
