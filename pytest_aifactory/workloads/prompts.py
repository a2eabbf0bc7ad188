"""LLM prompt workloads: seeded synthetic prompts, ShareGPT JSON and JSONL prompt files.

Every workload builds request ``index`` the same way in any process, so worker processes
and client nodes that share a schedule send exactly the requests a single process would.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from pytest_aifactory.core.errors import LoadConfigError
from pytest_aifactory.core.words import COMMON_WORDS

if TYPE_CHECKING:
    from pytest_aifactory.workloads.shared_prefix import SharedPrefixPrompts

__all__ = ["LLMRequest", "Lengths", "PromptFile", "SyntheticPrompts", "prompt_problem", "prompts_from_spec"]


@dataclass(frozen=True)
class LLMRequest:
    """One prompt, how many tokens to generate, and its (estimated) input length.

    ``messages`` (role, content), when given, is what the chat API sends (a conversation's
    history); ``prompt`` is then the same conversation as text, for the completions API.
    """

    prompt: str
    max_tokens: int
    input_tokens: int
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution: fixed ``N``, or uniform ``LOW:HIGH`` (inclusive)."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str, what: str) -> Lengths:
        """Parse ``512`` or ``256:1024``; ``what`` names the field in errors."""
        match = re.fullmatch(r"(\d+)(?::(\d+))?", text.strip())
        if not match:
            raise ValueError(f"{what}={text!r}: expected a token count N or a range LOW:HIGH")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low < 1 or high < low:
            raise ValueError(f"{what}={text!r}: need 1 <= LOW <= HIGH")
        return cls(low, high)

    def draw(self, rng: np.random.Generator) -> int:
        """One length."""
        return int(rng.integers(self.low, self.high + 1))

    def pick(self, bits: int) -> int:
        """The length that random ``bits`` select (uniform when they are)."""
        return self.low + bits % (self.high - self.low + 1)


_MASK64 = (1 << 64) - 1
_POOL_WORDS = 1 << 16


def _mix(seed: int, index: int) -> int:
    """SplitMix64's finalizer over (seed, index): 64 well-spread bits, without a generator per request."""
    z = ((seed & _MASK64) * 0x9E3779B97F4A7C15 + index + 1) * 0x9E3779B97F4A7C15 & _MASK64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
    return z ^ (z >> 31)


@dataclass(frozen=True)
class SyntheticPrompts:
    """Random prompts of set input and output lengths (seeded, deterministic per index).

    One seeded pool of 65,536 random common words is drawn once; request ``index`` takes its
    lengths and a window of the pool from a 64-bit hash of (seed, index), so building a prompt
    costs a slice and a join, not a random generator.
    """

    input_len: Lengths
    output_len: Lengths
    seed: int = 0

    @functools.cached_property
    def _pool(self) -> list[str]:
        picks = np.random.default_rng(self.seed).integers(len(COMMON_WORDS), size=_POOL_WORDS)
        words = [COMMON_WORDS[i] for i in picks]
        return words + words  # any window of up to _POOL_WORDS words is one slice

    def request(self, index: int) -> LLMRequest:
        """Prompt ``index``: a unique prefix, then random common words."""
        bits = _mix(self.seed, index)
        tokens = self.input_len.pick(bits & 0xFFFFF)
        count, start = max(tokens - 1, 0), (bits >> 40) % _POOL_WORDS
        pool = self._pool if count <= _POOL_WORDS else self._pool * (count // _POOL_WORDS + 1)
        prompt = f"{index}: " + " ".join(pool[start : start + count])
        return LLMRequest(prompt, self.output_len.pick(bits >> 20 & 0xFFFFF), tokens)

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {
            "prompts": "synthetic",
            "input_len": [self.input_len.low, self.input_len.high],
            "output_len": [self.output_len.low, self.output_len.high],
            "seed": self.seed,
        }


def _estimate_tokens(text: str) -> int:
    """About four characters per token (no tokenizer on the client)."""
    return max(1, round(len(text) / 4))


def _from_entry(entry: Any, where: str, default_max_tokens: int) -> LLMRequest | None:
    if isinstance(entry, dict) and "conversations" in entry:  # ShareGPT
        turns = entry["conversations"]
        if not isinstance(turns, list) or len(turns) < 2:
            return None
        prompt, reply = str(turns[0].get("value", "")), str(turns[1].get("value", ""))
        if not prompt:
            return None
        return LLMRequest(prompt, _estimate_tokens(reply), _estimate_tokens(prompt))
    if isinstance(entry, dict) and isinstance(entry.get("prompt"), str):
        max_tokens = entry.get("max_tokens", entry.get("output_tokens", default_max_tokens))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"{where}: 'max_tokens' must be a positive integer, got {max_tokens!r}")
        return LLMRequest(entry["prompt"], max_tokens, _estimate_tokens(entry["prompt"]))
    raise ValueError(f"{where}: expected a ShareGPT entry ('conversations') or an object with a 'prompt' string")


@dataclass(frozen=True)
class PromptFile:
    """Prompts from a ShareGPT JSON file or a JSONL file, in a seeded random order.

    ShareGPT: a list of ``{"conversations": [{"from": "human", "value": ...}, {"from":
    "gpt", "value": ...}, ...]}``; the first turn is the prompt and the length of the
    reply (about 4 characters per token) sets ``max_tokens``. JSONL: one such entry, or
    ``{"prompt": ..., "max_tokens": N}``, per line. ``max_output`` caps ``max_tokens``.
    """

    entries: Sequence[LLMRequest]
    source: str
    seed: int = 0
    max_output: int | None = None

    @classmethod
    def load(
        cls, path: Path, seed: int = 0, max_output: int | None = None, default_max_tokens: int = 128
    ) -> PromptFile:
        """Read ``path`` (``.jsonl``: JSON lines; otherwise one JSON list)."""
        if not path.is_file():
            raise ValueError(f"prompt file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".jsonl":
                items = [
                    (f"{path}:{n}", json.loads(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()
                ]
            else:
                data = json.loads(text)
                if not isinstance(data, list):
                    raise ValueError(f"{path}: expected a JSON list of ShareGPT entries")
                items = [(f"{path}[{n}]", entry) for n, entry in enumerate(data)]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        entries = [r for where, e in items if (r := _from_entry(e, where, default_max_tokens)) is not None]
        if not entries:
            raise ValueError(f"{path}: no usable prompt in the file")
        order = np.random.default_rng(seed).permutation(len(entries))
        return cls([entries[i] for i in order], str(path), seed, max_output)

    def request(self, index: int) -> LLMRequest:
        """Prompt ``index`` (the file repeats when exhausted)."""
        entry = self.entries[index % len(self.entries)]
        if self.max_output is not None and entry.max_tokens > self.max_output:
            return LLMRequest(entry.prompt, self.max_output, entry.input_tokens)
        return entry

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {"prompts": self.source, "entries": len(self.entries), "seed": self.seed, "max_output": self.max_output}


PromptSource = Union[SyntheticPrompts, PromptFile, "SharedPrefixPrompts"]


_FILE_KINDS = ("sharegpt", "file")


def prompts_from_spec(spec: str, seed: int = 0) -> PromptSource:
    """Build a workload from ``synthetic:in=512,out=128``, ``shared-prefix:...`` or ``sharegpt:PATH`` / ``file:PATH``.

    Synthetic options: ``in`` and ``out`` (N or LOW:HIGH), ``seed``. File options after the
    path: ``PATH,max_out=256``. Shared prefixes: see ``shared_prefix.SharedPrefixPrompts``.
    A bad spec or prompt file is a ``LoadConfigError`` (one paragraph) saying what is accepted.
    """
    try:
        return _source(spec, seed)
    except ValueError as exc:
        raise LoadConfigError(str(exc)) from None


def prompt_problem(spec: Any) -> str | None:
    """What is wrong with ``spec`` as ``prompts=`` (None: nothing), without reading a prompt file.

    The plugin checks a test's literal ``prompts=`` with it when it collects the test; the
    file a spec names is read when the load runs (the test may write it).
    """
    if not isinstance(spec, str):
        return f"prompts={spec!r}: expected a string such as 'synthetic:in=128,out=64'"
    kind, _, rest = spec.partition(":")
    if kind in _FILE_KINDS and rest:
        return None
    try:
        _source(spec, 0)
    except ValueError as exc:
        return str(exc)
    return None


def _source(spec: str, seed: int) -> PromptSource:
    kind, _, rest = spec.partition(":")
    if kind == "shared-prefix":
        from pytest_aifactory.workloads.shared_prefix import SharedPrefixPrompts  # it imports this module

        return SharedPrefixPrompts.from_options(dict(_options(rest, spec)), spec, seed)
    if kind == "synthetic":
        options = dict(_options(rest, spec))
        unknown = set(options) - {"in", "out", "seed"}
        if unknown:
            raise ValueError(f"prompts {spec!r}: unknown option(s) {', '.join(sorted(unknown))}; valid: in, out, seed")
        return SyntheticPrompts(
            Lengths.parse(options.get("in", "128"), "in"),
            Lengths.parse(options.get("out", "64"), "out"),
            int(options.get("seed", seed)),
        )
    if kind in _FILE_KINDS and rest:
        path, _, tail = rest.partition(",")
        options = dict(_options(tail, spec)) if tail else {}
        max_out = int(options["max_out"]) if "max_out" in options else None
        return PromptFile.load(Path(path), seed=seed, max_output=max_out)
    raise ValueError(
        f"unknown prompt source {spec!r}; use synthetic:in=N,out=N[,seed=S], "
        "shared-prefix:prefixes=N,prefix=N,suffix=N,out=N,share=F, sharegpt:PATH or file:PATH.jsonl"
    )


def _options(text: str, spec: str) -> list[tuple[str, str]]:
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"prompts {spec!r}: expected KEY=VALUE, got {part!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs
