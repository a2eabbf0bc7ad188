"""Load arguments written as literals in a test are checked when it is collected, before anything starts.

A test's body runs after its fixtures have started its services: a ``rate=-5`` found only
then has cost a service job (minutes of a GPU node on a cluster). So the ``aif_load.NAME(...)``
calls of a test function are read from its source (``ast``), and every argument known without
running the test is checked by the very checks the load applies when it runs
(``load.parameters.ACCEPTED``, ``workloads.prompts.prompt_problem``): a literal keyword
(``rate=-5``, ``prompts="bogus:x"``), a keyword naming a ``parametrize`` argument that the
body does not assign (``rate=r``, ``**plan``: each of its values), and the values of
``aif_load.sweep("rate", [5, -1], ...)``; and a ``VectorDataset("sift1m", ...)`` of literal
arguments, by its own checks. A bad one makes the test's module a collection error naming
the file, line, argument and what is accepted; pytest then runs nothing, so no job is
submitted. Anything else (a variable, a call, a value from a fixture) is checked when the
load runs, with the same words.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_aifactory.load.parameters import parameter_problems
from pytest_aifactory.workloads.prompts import prompt_problem
from pytest_aifactory.workloads.vectors.datasets import VectorDataset

__all__ = ["literal_problems"]

FIXTURE = "aif_load"
_UNKNOWN = object()  # an argument whose value is only known when the test runs
_PARAM = type(pytest.param(None))  # what pytest.param makes (pytest does not export its name)


def _problems(given: Mapping[str, Any]) -> list[str]:
    """The runtime checks, on the arguments known now."""
    problem = prompt_problem(given["prompts"]) if "prompts" in given else None
    return [*parameter_problems(given), *([problem] if problem else [])]


def _parametrized(function: Callable[..., Any]) -> dict[str, list[Any]]:
    """Argument name -> its values, from the function's direct ``parametrize`` marks (lists and tuples only)."""
    values: dict[str, list[Any]] = {}
    for mark in getattr(function, "pytestmark", []):
        if mark.name != "parametrize" or mark.kwargs.get("indirect") or len(mark.args) < 2:
            continue
        names, cases = mark.args[0], mark.args[1]
        if not isinstance(cases, list | tuple):
            continue  # an iterator pytest has already consumed
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        for case in cases:
            row = case.values if isinstance(case, _PARAM) else case if len(names) > 1 else (case,)
            for name, value in zip(names, row, strict=False):
                values.setdefault(name, []).append(value)
    return values


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNKNOWN


def _cases(call: ast.Call, parametrized: Mapping[str, list[Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """(arguments known now, where they come from) for one ``aif_load`` call."""
    literal: dict[str, Any] = {}
    for keyword in call.keywords:
        name = keyword.value.id if isinstance(keyword.value, ast.Name) else ""
        if keyword.arg is None:  # **plan
            for value in parametrized.get(name, []):
                if isinstance(value, Mapping):
                    yield dict(value), f" (**{name} = {dict(value)!r}, from parametrize)"
        elif name in parametrized:
            for value in parametrized[name]:
                yield {keyword.arg: value}, f" ({name} = {value!r}, from parametrize)"
        elif (value := _literal(keyword.value)) is not _UNKNOWN:
            literal[keyword.arg] = value
    yield literal, ""
    attribute = call.func.attr if isinstance(call.func, ast.Attribute) else ""
    if attribute == "sweep" and len(call.args) >= 2:
        parameter, values = _literal(call.args[0]), _literal(call.args[1])
        if isinstance(parameter, str) and isinstance(values, list | tuple):
            for value in values:
                yield {parameter: value}, " (a value of the sweep)"


def _load_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == FIXTURE
    )


def _dataset_problem(call: ast.Call) -> str | None:
    """What ``VectorDataset(...)`` says of its literal arguments (an ``embedded`` one reads its file later)."""
    args = [_literal(arg) for arg in call.args]
    kwargs = {keyword.arg: _literal(keyword.value) for keyword in call.keywords if keyword.arg is not None}
    if _UNKNOWN in (*args, *kwargs.values()) or len(kwargs) < len(call.keywords):  # **options: known later
        return None
    if (args[:1] or [kwargs.get("name")])[0] == "embedded":
        return None
    try:
        VectorDataset(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def literal_problems(function: Callable[..., Any], root: Path) -> list[str]:
    """``file:line: aif_load.openai: rate=-5: expected ...`` for each bad argument known before ``function`` runs.

    The file is named relative to ``root`` (the folder pytest was started in) when it is below it.
    """
    try:
        lines, first = inspect.getsourcelines(function)
        source = Path(inspect.getsourcefile(function) or "?")
        path = source.relative_to(root) if source.is_relative_to(root) else source
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return []  # no source to read: the load checks its arguments when it runs
    assigned = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    parametrized = {name: values for name, values in _parametrized(function).items() if name not in assigned}
    found = []
    for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
        line = f"{path}:{call.lineno + first - 1}"
        if _load_call(call):
            where = f"{line}: {FIXTURE}.{getattr(call.func, 'attr', '')}"
            for given, origin in _cases(call, parametrized):
                found += [f"{where}: {problem}{origin}" for problem in _problems(given)]
        elif isinstance(call.func, ast.Name) and call.func.id == VectorDataset.__name__:
            problem = _dataset_problem(call)
            found += [f"{line}: {VectorDataset.__name__}: {problem}"] if problem else []
    return list(dict.fromkeys(found))


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """A test function that uses ``aif_load`` with a bad literal argument is a collection error of its module."""
    collected = yield
    if collected and inspect.isfunction(obj) and FIXTURE in inspect.signature(obj).parameters:
        problems = literal_problems(obj, collector.config.invocation_params.dir)
        if problems:
            raise collector.CollectError(
                f"bad load parameters in {name} (found before anything was started):\n" + "\n".join(problems)
            )
    return collected
