"""The public surface: each public module's ``__all__`` is exactly its public names, and every
exported class and function, and every public method of the clients, has a docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import datalab_async
from datalab_async import AsyncDatalabClient
from datalab_async.dify import AsyncDifyKnowledgeClient


def public_modules() -> list[str]:
    """``datalab_async`` and every submodule with no ``_private`` part in its dotted name."""
    names = ["datalab_async"]
    for info in pkgutil.walk_packages(datalab_async.__path__, "datalab_async."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


def own_public_names(module: ModuleType) -> set[str]:
    """Public names bound in ``module`` to objects of this package: for a package, everything
    it binds (its names are its surface); for a plain module, what it defines (names it only
    imports to use, e.g. for type hints, belong to the modules that define them)."""
    is_package = hasattr(module, "__path__")
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        home = str(getattr(value, "__module__", ""))
        if home == module.__name__ or (is_package and home.startswith("datalab_async")):
            names.add(name)
    return names


def test_public_modules_are_found() -> None:
    assert {"datalab_async", "datalab_async.dify", "datalab_async.local"} <= set(public_modules())


@pytest.mark.parametrize("name", public_modules())
def test_all_is_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]  # lazy exports resolve too
    assert missing == [], f"{name}.__all__ names what the module lacks"
    unexported = own_public_names(module) - set(exported)
    assert unexported == set(), f"{name} has public names missing from __all__"


def exported_objects() -> Iterator[tuple[str, Any]]:
    for name in public_modules():
        module = importlib.import_module(name)
        for attr in module.__all__:
            value = getattr(module, attr)
            if inspect.isclass(value) or inspect.isfunction(value):
                yield f"{name}.{attr}", value


def test_every_exported_class_and_function_has_a_docstring() -> None:
    undocumented = [name for name, value in exported_objects() if not inspect.getdoc(value)]
    assert undocumented == []


def public_methods(cls: type) -> Iterator[tuple[str, Any]]:
    """Public callables and properties of ``cls``, including inherited mixins of ours."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("datalab_async"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(member, property):
                yield name, member.fget
            elif isinstance(member, staticmethod | classmethod):
                yield name, member.__func__
            elif inspect.isfunction(member):
                yield name, member


@pytest.mark.parametrize("cls", [AsyncDatalabClient, AsyncDifyKnowledgeClient])
def test_every_public_client_method_has_a_docstring(cls: type) -> None:
    methods = dict(public_methods(cls))
    assert len(methods) >= 5  # the walk found the methods (and the mixins')
    undocumented = [name for name, func in methods.items() if not (func.__doc__ or "").strip()]
    assert undocumented == []


def test_every_list_endpoint_has_an_iterator() -> None:
    methods = dict(public_methods(AsyncDatalabClient))
    listing = {n for n in methods if n.startswith("list_")}
    iterators = {n for n in methods if n.startswith("iter_")}
    assert len(listing) >= 7
    assert {"iter_" + n.removeprefix("list_") for n in listing} <= iterators
    assert {"iter_step_types", "iter_eval_file_results"} <= iterators
    for name in iterators:
        signature = inspect.signature(methods[name])
        assert {"page_size", "limit"} <= set(signature.parameters), name
