"""The README's runnable examples run as written, and its option table lists every option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_aifactory.plugin.options import OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
_RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.S)

pytestmark = pytest.mark.timeout(300)


def runnable_blocks() -> list[str]:
    """The code blocks the README marks ``<!-- runnable -->``."""
    return _RUNNABLE.findall(README.read_text(encoding="utf-8"))


def test_the_runnable_examples_pass_as_written(pytester: pytest.Pytester) -> None:
    blocks = runnable_blocks()
    assert len(blocks) >= 2, "the README lost its runnable examples"
    for number, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_readme_{number}": block})
    tests = sum(len(re.findall(r"^def test_", block, re.M)) for block in blocks)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-profile=local", "--strict-markers")
    result.assert_outcomes(passed=tests)


def test_the_option_table_lists_every_option_and_its_ini_twin() -> None:
    text = README.read_text(encoding="utf-8").split("## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip().split(" ")[0].strip("`"): line for line in text.splitlines() if "| `--aif-" in line
    }
    for option in OPTIONS:
        assert option.flag in rows, f"README option table lacks {option.flag}"
        if option.ini:
            assert f"`{option.dest}`" in rows[option.flag], f"README: {option.flag} without its ini twin"


_FIGURES = re.compile(r"<!-- figures: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- end of figures: (?P=name) -->", re.S)


def test_every_figure_block_was_written_by_the_benchmark_it_names() -> None:
    """Each README figure block is filled, headed by its provenance, and a benchmark publishes it."""
    blocks = {m["name"]: m["body"] for m in _FIGURES.finditer(README.read_text(encoding="utf-8"))}
    assert blocks, "the README lost its figure blocks"
    sources = "\n".join(p.read_text() for p in (README.parent / "benchmarks").rglob("test_*.py"))
    for name, body in blocks.items():
        assert body.startswith("Generated "), f"figure block {name!r} is not generated"
        assert "Do not edit by hand." in body, f"figure block {name!r} is not generated"
        command = re.search(r"by `pytest (\S+)", body)
        assert command, f"figure block {name!r} names no command"
        assert (README.parent / command[1]).exists(), f"figure block {name!r} names no benchmark file"
        assert re.search(rf'publish\(\s*"{name}"', sources), f"no benchmark publishes the figure block {name!r}"
