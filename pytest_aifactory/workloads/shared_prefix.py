"""Prompts that share long prefixes (agents, RAG, system prompts), so that a prefix cache decides TTFT.

``prefixes`` distinct prefixes of ``prefix_len`` tokens; a share ``share`` of the prompts
(exactly ``round(n * share)`` of the first ``n``, spread evenly) starts with one of them,
drawn at random, the others with a prefix of the same length of their own. Every prompt then
has its own suffix (``suffix_len`` tokens, starting with its index), so that no two prompts
are equal. ``share=0`` is the same workload with unique prefixes: the comparison that shows
what the prefix cache is worth. Deterministic by seed and index, like every workload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_aifactory.core.words import COMMON_WORDS
from pytest_aifactory.workloads.prompts import Lengths, LLMRequest

__all__ = ["SharedPrefixPrompts"]

_PREFIX_STREAM, _UNIQUE_STREAM = 1, 2


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(rng.choice(COMMON_WORDS, size=max(count, 0)))


@dataclass(frozen=True)
class SharedPrefixPrompts:
    """Prompts built as prefix + suffix, the prefix shared by a set share of them."""

    prefixes: int
    prefix_len: int
    suffix_len: Lengths
    output_len: Lengths
    share: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prefixes < 1:
            raise ValueError(f"shared-prefix: prefixes={self.prefixes}: need at least 1")
        if self.prefix_len < 2:
            raise ValueError(f"shared-prefix: prefix={self.prefix_len}: need at least 2 tokens")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"shared-prefix: share={self.share}: need 0 <= share <= 1")

    @classmethod
    def from_options(cls, options: dict[str, str], spec: str, seed: int = 0) -> SharedPrefixPrompts:
        """From ``prefixes=4,prefix=512,suffix=32:64,out=16,share=0.9,seed=1`` (parsed into ``options``)."""
        valid = {"prefixes", "prefix", "suffix", "out", "share", "seed"}
        unknown = set(options) - valid
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ValueError(f"prompts {spec!r}: unknown option(s) {names}; valid: {', '.join(sorted(valid))}")
        try:
            return cls(
                prefixes=int(options.get("prefixes", "4")),
                prefix_len=int(options.get("prefix", "256")),
                suffix_len=Lengths.parse(options.get("suffix", "32"), "suffix"),
                output_len=Lengths.parse(options.get("out", "16"), "out"),
                share=float(options.get("share", "1")),
                seed=int(options.get("seed", seed)),
            )
        except ValueError as exc:
            raise ValueError(f"prompts {spec!r}: {exc}") from None

    def shared(self, index: int) -> bool:
        """Whether prompt ``index`` starts with a shared prefix (exactly ``round(n * share)`` of the first n)."""
        return math.floor((index + 1) * self.share + 0.5) > math.floor(index * self.share + 0.5)

    def prefix_group(self, index: int) -> int | None:
        """The shared prefix prompt ``index`` uses, or None for a prefix of its own."""
        if not self.shared(index):
            return None
        return int(np.random.default_rng([self.seed, index]).integers(self.prefixes))

    def prefix(self, group: int) -> str:
        """Shared prefix number ``group``: ``prefix_len`` tokens, the same in every process."""
        rng = np.random.default_rng([self.seed, _PREFIX_STREAM, group])
        return f"prefix {group}: " + _words(rng, self.prefix_len - 2)

    def request(self, index: int) -> LLMRequest:
        """Prompt ``index``: its prefix (shared or its own), then a suffix of its own."""
        group = self.prefix_group(index)
        if group is None:
            unique = np.random.default_rng([self.seed, _UNIQUE_STREAM, index])
            prefix = f"own {index}: " + _words(unique, self.prefix_len - 2)
        else:
            prefix = self.prefix(group)
        rng = np.random.default_rng([self.seed, index, _UNIQUE_STREAM])
        suffix_tokens = self.suffix_len.draw(rng)
        suffix = f"{index}: " + _words(rng, suffix_tokens - 1)
        return LLMRequest(f"{prefix}\n{suffix}", self.output_len.draw(rng), self.prefix_len + suffix_tokens)

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {
            "prompts": "shared-prefix",
            "prefixes": self.prefixes,
            "prefix_len": self.prefix_len,
            "suffix_len": [self.suffix_len.low, self.suffix_len.high],
            "output_len": [self.output_len.low, self.output_len.high],
            "prefix_share": self.share,
            "seed": self.seed,
        }
