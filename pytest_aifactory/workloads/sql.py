"""PostgreSQL workloads through psycopg: pgbench's TPC-B-like transaction and point selects.

The tables are pgbench's (``pgbench_accounts`` with 100 000 rows per scale unit, tellers,
branches, history), so ``pgbench`` can run on the same data as a cross-check.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock

__all__ = ["PgbenchResult", "PostgresClient", "TpcbWorkload", "init_tpcb", "pgbench", "redact_dsn"]

_TPCB = (
    "UPDATE pgbench_accounts SET abalance = abalance + %(delta)s WHERE aid = %(aid)s",
    "SELECT abalance FROM pgbench_accounts WHERE aid = %(aid)s",
    "UPDATE pgbench_tellers SET tbalance = tbalance + %(delta)s WHERE tid = %(tid)s",
    "UPDATE pgbench_branches SET bbalance = bbalance + %(delta)s WHERE bid = %(bid)s",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%(tid)s, %(bid)s, %(aid)s, %(delta)s, now())",
)
_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = %(aid)s"


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for reports and messages)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def connect_check(dsn: str) -> None:
    """Raise ``ValueError`` naming the (redacted) DSN when it does not connect."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ValueError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {str(exc).strip()}") from None


def init_tpcb(dsn: str, scale: int) -> None:
    """Create and fill pgbench's tables at ``scale`` (100 000 accounts per unit); idempotent."""
    import psycopg

    connect_check(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('pgbench_branches') IS NOT NULL").fetchone()
        if row and row[0]:
            count = conn.execute("SELECT count(*) FROM pgbench_branches").fetchone()
            if count and count[0] == scale:
                return
        conn.execute("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history")
        conn.execute("CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88))")
        conn.execute("CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84))")
        conn.execute(
            "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))"
            " WITH (fillfactor=100)"
        )
        conn.execute(
            "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))"
        )
        conn.execute("INSERT INTO pgbench_branches SELECT b, 0 FROM generate_series(1, %s) b", (scale,))
        conn.execute(
            "INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, %s) t", (10 * scale,)
        )
        conn.execute(
            "INSERT INTO pgbench_accounts SELECT a, (a - 1) / 100000 + 1, 0 FROM generate_series(1, %s) a",
            (100000 * scale,),
        )
        conn.execute("VACUUM ANALYZE")


@dataclass(frozen=True)
class TpcbWorkload:
    """Parameters of transaction ``index`` (seeded): account, teller, branch and delta."""

    scale: int
    mode: Literal["tpcb", "select"] = "tpcb"
    seed: int = 0

    def request(self, index: int) -> dict[str, int]:
        """The parameters of request ``index``."""
        rng = np.random.default_rng([self.seed, index])
        return {
            "aid": int(rng.integers(1, 100000 * self.scale + 1)),
            "tid": int(rng.integers(1, 10 * self.scale + 1)),
            "bid": int(rng.integers(1, self.scale + 1)),
            "delta": int(rng.integers(-5000, 5001)),
        }

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {"workload": f"pgbench-{self.mode}", "scale": self.scale, "seed": self.seed}


@dataclass
class PostgresClient:
    """Runs each request as one transaction on a pool of ``connections`` connections."""

    dsn: str
    connections: int
    mode: Literal["tpcb", "select"] = "tpcb"
    _pool: asyncio.Queue[Any] | None = field(default=None, init=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Configuration for reports (password redacted)."""
        return {"client": "psycopg", "dsn": redact_dsn(self.dsn), "connections": self.connections, "mode": self.mode}

    async def open(self) -> None:
        """Open the connections (prepared statements are psycopg's automatic ones)."""
        import psycopg

        self._pool = asyncio.Queue()
        for _ in range(self.connections):
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=self.mode == "select")
            conn.prepare_threshold = 0
            self._pool.put_nowait(conn)

    async def close(self) -> None:
        """Close every connection."""
        if self._pool is None:
            return
        while not self._pool.empty():
            await self._pool.get_nowait().close()
        self._pool = None

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """One transaction; a failed one is rolled back and counted as an error."""
        assert self._pool is not None, "open() first"
        conn = await self._pool.get()  # waiting for a free connection counts as latency
        try:
            if self.mode == "select":
                await (await conn.execute(_SELECT, payload)).fetchone()
            else:
                async with conn.transaction():
                    for statement in _TPCB:
                        await conn.execute(statement, payload)
        except Exception:
            if not conn.closed and conn.info.transaction_status != 0:
                await conn.rollback()
            raise
        finally:
            self._pool.put_nowait(conn)
        record.end = clock.now()


@dataclass(frozen=True)
class PgbenchResult:
    """What ``pgbench`` itself measured on the same server."""

    tps: float
    latency_ms: float
    command: str


def pgbench(dsn: str, mode: Literal["tpcb", "select"], clients: int, seconds: int) -> PgbenchResult | None:
    """Run ``pgbench`` (if installed) on the same tables; None when it is not installed."""
    binary = shutil.which("pgbench")
    if binary is None:
        return None
    argv = [binary, "-n", "-c", str(clients), "-j", str(min(clients, 4)), "-T", str(seconds), "-M", "prepared"]
    if mode == "select":
        argv.append("-S")
    done = subprocess.run([*argv, dsn], capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    if tps is None or latency is None:
        raise RuntimeError(f"unexpected pgbench output: {done.stdout[-500:]}")
    return PgbenchResult(float(tps.group(1)), float(latency.group(1)), " ".join(argv))
