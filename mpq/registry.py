"""Registries by name: one idiom for commands, solvers, estimators, exporters, number formats and target sizes.

A registry is a plain dict from name to thing, owned by the module that defines the thing's kind.
Things enter it only through :func:`register`, which refuses a second, different thing under a
name already taken, so no module can silently replace another's entry. Built-ins register when
:func:`load` imports their package's public modules (a module named ``_*.py`` is private: shared
helpers, never imported for registration); out-of-tree plugins register through the Python entry
point group of their kind (``mpq.solvers``, ``mpq.estimators``, ``mpq.exporters``,
``mpq.commands``), which :func:`load` reads too. Pure Python: no torch.
"""
from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Callable, MutableMapping, TypeVar

from .errors import MpqError

T = TypeVar("T")

#: (package, entry point group) pairs already loaded in this process: the service lists registries
#: on every request, so loading happens once.
_loaded: set[tuple[str, str]] = set()


class RegistryError(MpqError):
    """Two different things claim one name, or a plugin's entry point cannot be loaded."""


def _same(a: Any, b: Any) -> bool:
    """The same thing: identical, equal, or one class defined again by re-importing its module."""
    if a is b or (not isinstance(a, type) and a == b):
        return True
    return isinstance(a, type) and isinstance(b, type) and (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(table: MutableMapping[str, T], name: str, thing: T, *, kind: str) -> T:
    """Enter ``thing`` under ``name``, once: registering it again is a no-op, a different one an error."""
    if not isinstance(name, str) or not name:
        raise RegistryError(f"a {kind} needs a non-empty string name, got {name!r}")
    old = table.get(name)
    if old is not None and not _same(old, thing):
        where = getattr(old, "__module__", None)
        raise RegistryError(f"{kind} {name!r} is already registered" + (f" (by {where})" if where else "")
                            + "; choose another name")
    table[name] = thing
    return thing


def registrar(table: MutableMapping[str, T], kind: str, key: Callable[[T], str] = lambda t: t.name) -> Callable[[T], T]:
    """A decorator that registers a thing under ``key(thing)`` (its ``name`` by default)."""

    def deco(thing: T) -> T:
        return register(table, key(thing), thing, kind=kind)

    deco.__doc__ = f"Register a {kind} by its name (once)."
    return deco


def import_public_modules(package: str) -> None:
    """Import every public module of ``package`` (not ``_*.py``), so their registrations run."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def load_entry_points(group: str, table: MutableMapping[str, T], kind: str,
                      key: Callable[[T], str] = lambda t: t.name) -> None:
    """Register every object the installed distributions publish in entry point ``group``.

    An entry point names an object (a solver class: ``mine = my_pkg.solver:MySolver``), registered
    under its own name, which must be the entry point's name so ``pip show`` and ``mpq solvers``
    agree; or a module (``my_pkg.commands``) whose import registers what it defines.
    """
    for ep in entry_points(group=group):
        try:
            thing = ep.load()
        except Exception as e:  # a broken plugin names itself instead of breaking every command
            raise RegistryError(f"cannot load {kind} plugin {ep.name!r} ({ep.value}) from entry point group {group!r}: "
                                f"{type(e).__name__}: {e}") from None
        if isinstance(thing, ModuleType):
            continue
        name = key(thing)
        if name != ep.name:
            raise RegistryError(f"{kind} plugin entry point {ep.name!r} ({ep.value}) registers as {name!r}; "
                                f"name the entry point {name!r}")
        register(table, name, thing, kind=kind)


def load(package: str, group: str, table: MutableMapping[str, T], kind: str,
         key: Callable[[T], str] = lambda t: t.name) -> None:
    """Fill ``table`` once per process: built-ins from ``package``, then plugins from entry point ``group``."""
    if (package, group) in _loaded:
        return
    import_public_modules(package)
    load_entry_points(group, table, kind, key)
    _loaded.add((package, group))
