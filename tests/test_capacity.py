"""Capacity search against a server whose capacity is known (``slotted-llm``: slots / service time)."""

from __future__ import annotations

import json
import math
import re
import socket
import time

import httpx
import pytest
from helpers import wait_for

from pytest_aifactory.core.errors import LoadConfigError
from pytest_aifactory.core.metrics import LoadResult, summarize
from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.core.slo import check, parse_slo
from pytest_aifactory.export.prometheus import final_registry
from pytest_aifactory.load.capacity import CapacitySearch, search_capacity
from pytest_aifactory.services.slotted_llm import capacity_rate
from pytest_aifactory.workloads.runner import LoadRunner

pytestmark = pytest.mark.timeout(120)

SLOTS, SERVICE_MS = 2, 100.0  # capacity 20 req/s; a long service time makes the server's timer error small
SLO = [f"p99_e2e_ms <= {2 * SERVICE_MS:g}", "error_rate == 0"]


@pytest.fixture(scope="module")
def slotted(aif_shared_service):  # type: ignore[no-untyped-def]
    return aif_shared_service("slotted-llm", slots=SLOTS, service_ms=SERVICE_MS)


def _probe(runner: LoadRunner, server, **kwargs):  # type: ignore[no-untyped-def]
    prompts, load = "synthetic:in=4,out=2", {"distribution": "constant", "duration_s": 1.5, "warmup": 3}
    return runner.capacity("rate", runner.openai, server, prompts=prompts, **load, **kwargs)


def test_capacity_found_within_precision_in_bounded_time(slotted) -> None:  # type: ignore[no-untyped-def]
    runner = LoadRunner()
    began = time.monotonic()
    answer = _probe(runner, slotted, slo=SLO, low=5, precision=0.1, budget_s=40)
    took = time.monotonic() - began
    truth = capacity_rate(SLOTS, SERVICE_MS)
    lo, hi = answer.bracket
    assert answer.status == "found", answer.message()
    assert (hi - lo) <= 0.1 * lo
    # Below capacity no request waits; above it the queue grows with the run: after 1.5 s the p99
    # request waited more than a service time once the rate is above truth * (1 + 0.1 s / 1.5 s),
    # so the SLO's threshold lies in [20, 21.3] req/s, less what a busy machine adds to the service time.
    assert 0.9 * truth <= lo <= 1.07 * truth, answer.message()
    assert took < 40
    roles = [r.role for r in runner.results]
    assert roles == ["probe"] * len(answer.probes) + ["capacity"]
    result = runner.results[-1]
    assert result["capacity_rate"] == lo
    assert result["p99_e2e_ms"] <= 2 * SERVICE_MS  # the figures of the point at capacity
    report = result.to_json()["config"]["capacity"]
    assert [p["value"] for p in report["probes"]] == sorted(p.value for p in answer.probes)
    assert report["status"] == "found"


def test_unreachable_slo_says_so_and_stops(slotted) -> None:  # type: ignore[no-untyped-def]
    runner = LoadRunner()
    answer = _probe(runner, slotted, slo=[f"p99_e2e_ms <= {SERVICE_MS / 2:g}"], low=5, budget_s=30)
    assert answer.status == "unreachable"
    assert len(answer.probes) == 1
    assert math.isnan(answer.value)
    assert answer.message().startswith("SLO unreachable even at the lowest point rate=5: p99_e2e=")
    assert math.isnan(runner.results[-1]["capacity_rate"])


def _fake(value: float) -> LoadResult:
    """A result whose p99 latency is 10 ms below a capacity of 37 and 1 s above it."""
    record = RequestRecord(0, 0.0, sent=0.0, end=0.01 if value <= 37 else 1.0)
    return summarize([record, RequestRecord(1, 0.0, sent=0.0, end=record.end)], f"rate={value:g}")


@pytest.mark.parametrize(("knob", "low", "expected"), [("rate", 1.0, (36.0, 38.0)), ("concurrency", 1, (37, 38))])
def test_search_brackets_then_bisects(knob, low, expected) -> None:  # type: ignore[no-untyped-def]
    search = CapacitySearch(knob, low, precision=0.05)
    answer = search_capacity(_fake, [parse_slo("p99_e2e_ms <= 100")], search)
    lo, hi = answer.bracket
    assert answer.status == "found"
    assert expected[0] <= lo <= 37 < hi <= expected[1]
    assert [p.value for p in answer.probes][:7] == [1, 2, 4, 8, 16, 32, 64]


def test_a_client_bound_probe_ends_the_search_inconclusive() -> None:
    def probe(value: float) -> LoadResult:
        result = _fake(value)
        result.client_limit = "lag p99 80 ms, CPU 0.95 core" if value >= 16 else ""
        return result

    answer = search_capacity(probe, [parse_slo("p99_e2e_ms <= 100")], CapacitySearch("rate", 1.0))
    assert answer.status == "client-bound"
    assert answer.value == 8
    assert answer.message() == (
        "inconclusive: the load generator was the limit at rate=16 (lag p99 80 ms, CPU 0.95 core); "
        "capacity is at least 8; use workers=N or nodes=N"
    )
    assert answer.to_result().client_limit == "lag p99 80 ms, CPU 0.95 core"
    assert answer.to_result().upper_bounds == {}  # rate=16 did not breach: it caps nothing
    # "At least 8": a regression gate must not read it as an exact 8
    assert answer.to_result().lower_bounds == {
        "capacity_rate": "the search shows only that capacity is at least 8 "
        "(the load generator was the limit at rate=16)"
    }


def test_search_stops_at_the_time_budget_and_at_the_highest_point() -> None:
    ticks = iter(range(1000))
    search = CapacitySearch("rate", 1.0, budget_s=3.5)
    answer = search_capacity(_fake, [parse_slo("p99_e2e_ms <= 100")], search, clock=lambda: float(next(ticks)))
    assert answer.status == "budget"
    assert "time budget of 3.5 s spent" in answer.message()
    assert "nan" not in answer.message()  # no breach yet: no upper end to state
    assert answer.message().endswith("before any probe breached an SLO: capacity is at least 1")
    capped = search_capacity(_fake, [parse_slo("p99_e2e_ms <= 100")], CapacitySearch("rate", 1.0, high=20))
    assert capped.status == "above-highest"
    assert capped.value == 20


def test_an_answer_that_is_only_a_lower_bound_settles_only_what_a_higher_value_could_not_change() -> None:
    ticks = iter(range(1000))
    search = CapacitySearch("rate", 1.0, budget_s=3.5)
    answer = search_capacity(_fake, [parse_slo("p99_e2e_ms <= 100")], search, clock=lambda: float(next(ticks)))
    result = answer.to_result()  # capacity is at least 1: the budget ran out before any breach
    higher, met, broken = check(
        [parse_slo(e) for e in ("capacity_rate >= 5", "capacity_rate >= 1", "capacity_rate <= 0.5")],
        result.metrics(),
        lower_bounds=result.lower_bounds,
    )
    assert (higher.inconclusive, higher.passed) == (True, False)
    assert higher.message() == (
        "capacity_rate=1 req/s (lower bound), expected >= 5 req/s: inconclusive: the search shows only that "
        "capacity is at least 1 (the time budget ran out before any breach); it may be higher"
    )
    assert (met.passed, met.inconclusive) == (True, False)
    assert broken.breached  # already above the ceiling: a higher value cannot help
    exact, above = check(
        [parse_slo("capacity_rate == 1"), parse_slo("capacity_rate == 0.5")],
        {"capacity_rate": 1.0},
        lower_bounds=result.lower_bounds,
    )
    assert exact.inconclusive  # 1 or more: maybe exactly 1
    assert above.breached  # 1 or more is never 0.5
    assert check([parse_slo("capacity_rate >= 1")], {}, lower_bounds=result.lower_bounds)[0].breached  # no value
    found = search_capacity(_fake, [parse_slo("p99_e2e_ms <= 100")], CapacitySearch("rate", 1.0, precision=0.05))
    assert found.to_result().lower_bounds == {}  # a breach above it: judged as a value, as before


def test_a_search_whose_budget_ran_out_after_a_breach_decides_only_outside_its_bracket() -> None:
    ticks = iter(range(1000))
    search = CapacitySearch("rate", 1.0, budget_s=26)  # probes 1 to 64 (capacity 37: 64 breached), no bisection
    answer = search_capacity(_fake, [parse_slo("p99_e2e_ms <= 100")], search, clock=lambda: float(next(ticks)))
    assert (answer.status, answer.bracket) == ("budget", (32.0, 64.0))
    result = answer.to_result()
    assert result.lower_bounds == {
        "capacity_rate": "the search shows only that capacity is at least 32 "
        "(the time budget ran out with capacity within [32, 64))"
    }
    assert result.upper_bounds == {"capacity_rate": 64.0}
    held, inside, above, under = check(
        [
            parse_slo(e)
            for e in ("capacity_rate >= 30", "capacity_rate >= 40", "capacity_rate >= 100", "capacity_rate < 64")
        ],
        result.metrics(),
        lower_bounds=result.lower_bounds,
        upper_bounds=result.upper_bounds,
    )
    assert (held.passed, held.inconclusive) == (True, False)
    assert inside.inconclusive  # it was a breach: 32 < 40, yet capacity may be 37 or 63
    assert above.breached  # below 64, so below 100 whatever the truth
    assert above.message() == "capacity_rate=32 req/s (lower bound, below 64), expected >= 100 req/s"
    assert (under.passed, under.inconclusive) == (True, False)
    assert json.loads(json.dumps(result.to_json()))["upper_bounds"] == {"capacity_rate": 64.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"knob": "tps"}, "capacity knob must be 'rate' or 'concurrency', got 'tps'"),
        ({"low": 0}, "low must be > 0"),
        ({"high": 0.5}, "high (0.5) must be above low (1"),
        ({"precision": 5}, "precision is a fraction in (0, 1), got 5"),
    ],
)
def test_search_rejects_bad_settings(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    settings = {"knob": "rate", "low": 1.0, **kwargs}
    with pytest.raises(LoadConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CapacitySearch(**settings)


SUITE = """
import pytest

@pytest.fixture(scope="module")
def slotted(aif_shared_service):
    return aif_shared_service("slotted-llm", slots=2, service_ms=100.0)

def search(aif_load, slotted, slo, low):
    return aif_load.capacity("rate", aif_load.openai, slotted, slo=[slo], low=low, high=30, precision=0.5,
                             prompts="synthetic:in=4,out=2", distribution="constant", duration_s=1.0, warmup=3)

@pytest.mark.slo("capacity_rate >= 10", "p99_e2e_ms <= 200")
def test_meets(aif_load, slotted):
    search(aif_load, slotted, "p99_e2e_ms <= 200", 10)

@pytest.mark.slo("capacity_rate >= 1")
def test_unreachable(aif_load, slotted):
    search(aif_load, slotted, "p99_e2e_ms <= 50", 5)

@pytest.mark.slo("capacity_rate >= 100")
def test_stopped_below_the_objective(aif_load, slotted):
    aif_load.capacity("rate", aif_load.openai, slotted, slo=["p99_e2e_ms <= 5000"], low=5, high=10,
                      prompts="synthetic:in=4,out=2", distribution="constant", duration_s=1.0, warmup=3)
"""


def test_capacity_slo_marker_and_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cap=SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--aif-results-dir=out", "--aif-html=r.html", "-rs"
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    assert "SLO breached: capacity_rate >= 1" in out
    assert "SLO inconclusive: capacity_rate >= 100" in out  # at least 10, maybe 100: not a breach
    assert "capacity is at least 10 (every SLO held up to the highest point before any breach)" in out
    assert "[capacity] capacity_rate=nan (no data) req/s, expected >= 1 req/s" in out
    assert "notes:\n  [capacity] SLO unreachable even at the lowest point rate=5: p99_e2e=" in out
    report = json.loads(next((pytester.path / "out").glob("*/report.json")).read_text())
    (meets,) = [t for t in report["tests"] if t["nodeid"].endswith("test_meets")]
    roles = [r["role"] for r in meets["results"]]
    assert roles[-1] == "capacity"
    assert set(roles[:-1]) == {"probe"}
    answer = meets["results"][-1]
    assert answer["config"]["capacity"]["metric"] == "capacity_rate"
    assert answer["metrics"]["capacity_rate"] == answer["config"]["capacity"]["value"] >= 10
    assert answer["config"]["service_version"] == "1"  # the point's configuration, for comparisons
    # Only the answer is judged: the probes above capacity breach p99_e2e_ms <= 80 by design.
    assert {v["label"] for v in meets["slo"]} == {"capacity"}
    assert all(v["passed"] for v in meets["slo"])
    assert "probe" in out  # the probes' SLO cell in the results table
    # The answer that is only a lower bound says so in the report; the HTML report and the
    # Pushgateway's figures show its SLO as inconclusive, not as a breach.
    (stopped,) = [t for t in report["tests"] if t["nodeid"].endswith("test_stopped_below_the_objective")]
    assert stopped["results"][-1]["lower_bounds"] == {
        "capacity_rate": "the search shows only that capacity is at least 10 "
        "(every SLO held up to the highest point before any breach)"
    }
    page = (pytester.path / "r.html").read_text()
    assert "<td><code>capacity_rate &gt;= 100</code></td><td>10</td><td class=inconclusive>inconclusive</td>" in page
    rows = [{"label": r["label"], "result": r, "verdicts": stopped["slo"]} for r in stopped["results"][-1:]]
    registry = final_registry(rows)
    assert (
        registry.get_sample_value("aifactory_slo_inconclusive", {"point": "capacity", "slo": "capacity_rate >= 100"})
        == 1
    )
    assert (
        registry.get_sample_value("aifactory_slo_passed", {"point": "capacity", "slo": "capacity_rate >= 100"}) is None
    )


def _stream_request(port: int) -> socket.socket:
    """A streamed completion's request on a new connection (its answer is not read)."""
    connection = socket.create_connection(("127.0.0.1", port))
    body = b'{"model":"synthetic","prompt":"x","max_tokens":4,"stream":true}'
    connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return connection


def _gauge(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(re.search(rf"^vllm:{name}\{{[^}}]*\}} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_a_client_that_leaves_frees_its_place_at_once(aif_service) -> None:  # type: ignore[no-untyped-def]
    """One slot, three-second requests: a queued request whose client goes away leaves the waiting
    count at once (not when the slot frees), and a running one whose client goes away frees the slot
    at once, so the next request takes one service time, not two."""
    service = aif_service("slotted-llm", slots=1, service_ms=3000.0, metrics=True)
    url, port = service.url().rstrip("/"), service.ports["http"]
    running = _stream_request(port)
    leaving = None
    try:
        wait_for("a running request", lambda: _gauge(url, "num_requests_running") == 1, timeout_s=10)
        leaving = _stream_request(port)
        wait_for("a waiting request", lambda: _gauge(url, "num_requests_waiting") == 1, timeout_s=10)
        leaving.close()
        wait_for("no waiting request", lambda: _gauge(url, "num_requests_waiting") == 0, timeout_s=1.5)
        running.close()
        wait_for("no running request", lambda: _gauge(url, "num_requests_running") == 0, timeout_s=1.5)
        started = time.monotonic()
        body = {"model": "synthetic", "prompt": "x", "max_tokens": 4}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=30).status_code == 200
        assert time.monotonic() - started < 5.0  # one service time (3 s), not two
    finally:
        running.close()
        if leaving is not None:
            leaving.close()
