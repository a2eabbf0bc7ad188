"""Conversations: sessions of turns whose context grows, with think time between turns.

Sessions arrive open loop (or closed loop, one session per slot); each is one engine request
whose record holds its turns' records. Turn k's prompt is the history of turns 1..k-1 (user
message and reply) plus a new user message, so its input grows; the replies in the history
are the conversation's own (ShareGPT's recorded answers, or synthetic words of the turn's
output length), so every run sends the same prompts whatever the model answered. Turn k+1
is due ``think`` seconds after turn k ended, and its latencies count from that due time
(late sends show as schedule lag). A failed turn ends its session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.core.words import COMMON_WORDS
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import Lengths, LLMRequest

__all__ = ["ConversationClient", "Session", "SyntheticConversations", "Turn", "conversations_from_spec"]


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's message, the reply kept in the history, tokens to generate."""

    user: str
    reply: str
    max_tokens: int


@dataclass(frozen=True)
class Session:
    """A conversation's turns and the think time before each turn after the first (s)."""

    turns: tuple[Turn, ...]
    think_s: tuple[float, ...]

    def request(self, k: int) -> LLMRequest:
        """Turn ``k``'s request (0-based): the history of turns before it, then its message."""
        messages: list[tuple[str, str]] = []
        for turn in self.turns[:k]:
            messages += [("user", turn.user), ("assistant", turn.reply)]
        messages.append(("user", self.turns[k].user))
        text = "".join(f"{role}: {content}\n" for role, content in messages) + "assistant:"
        tokens = sum(_estimate(content) for _, content in messages)
        return LLMRequest(text, self.turns[k].max_tokens, tokens, tuple(messages))


def _estimate(text: str) -> int:
    return max(1, len(text.split()))


def _think(rng: np.random.Generator, mean_s: float, drawn: bool) -> float:
    return float(rng.exponential(mean_s)) if drawn and mean_s > 0 else mean_s


@dataclass(frozen=True)
class SyntheticConversations:
    """Seeded sessions of ``turns`` turns (N or LOW:HIGH) of random common words."""

    turns: Lengths
    user_len: Lengths
    output_len: Lengths
    think_s: float = 1.0
    think_drawn: bool = False
    seed: int = 0

    def request(self, index: int) -> Session:
        """Session ``index``."""
        rng = np.random.default_rng([self.seed, index])
        turns = []
        for k in range(self.turns.draw(rng)):
            words = " ".join(rng.choice(COMMON_WORDS, size=self.user_len.draw(rng) - 1))
            output = self.output_len.draw(rng)
            reply = " ".join(rng.choice(COMMON_WORDS, size=output))
            turns.append(Turn(f"{index}.{k + 1}: {words}", reply, output))
        thinks = tuple(_think(rng, self.think_s, self.think_drawn) for _ in turns[1:])
        return Session(tuple(turns), thinks)

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {
            "prompts": "conversations",
            "turns": [self.turns.low, self.turns.high],
            "user_len": [self.user_len.low, self.user_len.high],
            "output_len": [self.output_len.low, self.output_len.high],
            "think_s": self.think_s,
            "think": "exponential" if self.think_drawn else "fixed",
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ShareGPTConversations:
    """ShareGPT conversations with their real turn structure (human, then gpt, repeated)."""

    sessions: Sequence[tuple[Turn, ...]]
    source: str
    think_s: float = 1.0
    think_drawn: bool = False
    max_turns: int | None = None
    max_output: int | None = None
    seed: int = 0

    @classmethod
    def load(cls, path: Path, **options: Any) -> ShareGPTConversations:
        """Read a ShareGPT JSON list; entries without a complete human/gpt exchange are skipped."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"conversations file {path}: {exc}") from None
        if not isinstance(data, list):
            raise ValueError(f"conversations file {path}: expected a JSON list of ShareGPT entries")
        sessions = []
        for n, entry in enumerate(data):
            messages = entry.get("conversations") if isinstance(entry, dict) else None
            if not isinstance(messages, list):
                raise ValueError(f"{path}[{n}]: expected an object with a 'conversations' list")
            pairs = zip(messages[::2], messages[1::2], strict=False)
            turns = tuple(
                Turn(str(h.get("value", "")), str(g.get("value", "")), _estimate(str(g.get("value", ""))))
                for h, g in pairs
                if h.get("from") == "human" and g.get("from") == "gpt" and h.get("value")
            )
            if turns:
                sessions.append(turns)
        if not sessions:
            raise ValueError(f"conversations file {path}: no conversation with a human turn and a gpt reply")
        return cls(sessions, str(path), **options)

    def request(self, index: int) -> Session:
        """Session ``index`` (the file repeats when exhausted)."""
        turns = self.sessions[index % len(self.sessions)][: self.max_turns]
        if self.max_output is not None:
            turns = tuple(Turn(t.user, t.reply, min(t.max_tokens, self.max_output)) for t in turns)
        rng = np.random.default_rng([self.seed, index])
        return Session(turns, tuple(_think(rng, self.think_s, self.think_drawn) for _ in turns[1:]))

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {
            "prompts": self.source,
            "conversations": len(self.sessions),
            "think_s": self.think_s,
            "think": "exponential" if self.think_drawn else "fixed",
            "max_turns": self.max_turns,
            "max_output": self.max_output,
        }


def conversations_from_spec(
    spec: str, think_s: float = 1.0, think: str = "fixed", seed: int = 0
) -> SyntheticConversations | ShareGPTConversations:
    """``synthetic:turns=2:6,user=16,out=32`` or ``sharegpt:PATH[,max_turns=N,max_out=N]``."""
    if think not in ("fixed", "exponential"):
        raise ValueError(f"think={think!r}: valid: fixed, exponential")
    if think_s < 0:
        raise ValueError(f"think_s={think_s}: must be >= 0")
    drawn = think == "exponential"
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        options = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
        unknown = set(options) - {"turns", "user", "out"}
        if unknown:
            raise ValueError(
                f"conversations {spec!r}: unknown option(s) {', '.join(sorted(unknown))}; valid: turns, user, out"
            )
        return SyntheticConversations(
            Lengths.parse(options.get("turns", "4"), "turns"),
            Lengths.parse(options.get("user", "16"), "user"),
            Lengths.parse(options.get("out", "16"), "out"),
            think_s,
            drawn,
            seed,
        )
    if kind == "sharegpt" and rest:
        path, *tail = rest.split(",")
        options = dict(part.split("=", 1) for part in tail if "=" in part)
        limits = {"max_turns": options.get("max_turns"), "max_output": options.get("max_out")}
        return ShareGPTConversations.load(
            Path(path), think_s=think_s, think_drawn=drawn, seed=seed, **{k: int(v) for k, v in limits.items() if v}
        )
    raise ValueError(f"unknown conversations {spec!r}; use synthetic:turns=N,user=N,out=N or sharegpt:PATH")


async def _wait_until(clock: Clock, due: float) -> None:
    """As the engine waits for a due time: sleep to a millisecond before it, then yield until it."""
    if due - clock.now() > 0.001:
        await asyncio.sleep(due - clock.now() - 0.001)
    while clock.now() < due:
        await asyncio.sleep(0)


@dataclass
class ConversationClient:
    """Runs one session per engine request through an OpenAI client, a record per turn."""

    llm: OpenAIClient

    def describe(self) -> dict[str, Any]:
        """The LLM client's configuration."""
        return self.llm.describe()

    async def open(self) -> None:
        """Open the LLM client's pool."""
        await self.llm.open()

    async def close(self) -> None:
        """Close it."""
        await self.llm.close()

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Every turn in order, each due ``think`` after the previous one ended."""
        session: Session = payload
        due = record.scheduled
        for k in range(len(session.turns)):
            if k:
                due = clock.now() + session.think_s[k - 1]
                await _wait_until(clock, due)
            turn = RequestRecord(index=record.index, scheduled=due, warmup=record.warmup, worker=record.worker)
            turn.sent = clock.now()
            try:
                await self.llm.send(session.request(k), turn, clock)
            except Exception as exc:  # as the engine does: a failed turn, not a crashed run
                turn.error = f"{type(exc).__name__}: {exc}"[:500]
            if turn.end is None and turn.error is None:
                turn.end = clock.now()
            record.turns.append(turn)
            if not turn.ok:
                record.error = f"turn {k + 1}: {turn.error}"
                break
        record.first_token = record.turns[0].first_token if record.turns else None
        record.end = clock.now()
