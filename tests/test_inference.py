"""The load engine and clients against real servers on 127.0.0.1, and SLOs through the plugin."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from pytest_aifactory.core.metrics import summarize
from pytest_aifactory.load.engine import Engine, LoadPlan
from pytest_aifactory.load.schedule import Arrivals
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import Lengths, LLMRequest, SyntheticPrompts, prompts_from_spec
from pytest_aifactory.workloads.runner import LoadRunner

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def timed_server(aif_shared_service):  # type: ignore[no-untyped-def]
    """Synthetic server: first token 40 ms after arrival, then a 3-token chunk every 12 ms."""
    return aif_shared_service("synthetic-llm", ttft_ms=40.0, itl_ms=12.0, tokens_per_chunk=3)


def test_engine_measures_known_server_timing(timed_server) -> None:  # type: ignore[no-untyped-def]
    runner = LoadRunner()
    result = runner.openai(timed_server, prompts="synthetic:in=16,out=12", rate=20, count=40, warmup=4)
    m = result.metrics()
    assert m["completed"] == 40
    assert m["mean_output_tokens"] == 12
    # Truth: TTFT 40 ms, 4 chunks of 3 tokens 12 ms apart -> 4 ms per token.
    assert 40 <= m["p50_ttft_ms"] <= 48
    assert m["p50_itl_ms"] == pytest.approx(4.0, abs=0.7)
    assert m["p50_tpot_ms"] == pytest.approx(36 / 11, abs=0.7)
    assert m["p50_e2e_ms"] == pytest.approx(76.0, abs=8)
    assert m["p99_lag_ms"] < 20
    assert result.config["rate"] == 20
    assert result.config["prompts"] == "synthetic"


def test_closed_loop_holds_concurrency(timed_server) -> None:  # type: ignore[no-untyped-def]
    result = LoadRunner().openai_chat(timed_server, prompts="synthetic:in=8,out=3", concurrency=4, count=40)
    records = result.records
    assert len(records) == 40
    in_flight = max(sum(1 for r in records if r.sent <= t.sent < r.end) for t in records)  # type: ignore[operator]
    assert in_flight == 4
    assert result.metrics()["error_rate"] == 0


@pytest.mark.parametrize("continuous_usage", [False, True])
def test_chat_role_delta_is_not_a_token(timed_server, continuous_usage: bool) -> None:  # type: ignore[no-untyped-def]
    """The chat stream's role-only first delta adds no token and no ITL interval.

    3-token chunks: exact with per-chunk usage, else split by text length (an estimate).
    """
    client = OpenAIClient(timed_server.url(), "synthetic", api="chat", continuous_usage=continuous_usage)
    plan = LoadPlan("closed", None, concurrency=2, count=6)
    records = asyncio.run(Engine(client, prompts_from_spec("synthetic:in=4,out=12"), plan).run())
    for r in records:
        assert [c.tokens for c in r.chunks] == [3, 3, 3, 3]
        assert r.tokens_estimated is not continuous_usage
        assert (r.first_token - r.scheduled) * 1000 >= 40  # type: ignore[operator]
    m = summarize(records).metrics()
    assert m["p50_itl_ms"] == pytest.approx(4.0, abs=0.7)


def test_two_worker_processes_merge_one_schedule(timed_server) -> None:  # type: ignore[no-untyped-def]
    result = LoadRunner(workers=2).openai(timed_server, prompts="synthetic:in=8,out=3", rate=40, count=60)
    assert sorted(r.index for r in result.records) == list(range(60))
    assert {r.worker for r in result.records} == {"w0", "w1"}
    assert result.metrics()["achieved_rate"] == pytest.approx(result.metrics()["offered_rate"], rel=0.1)


def test_open_loop_latency_includes_client_queueing(timed_server) -> None:  # type: ignore[no-untyped-def]
    """With at most one request in flight, 10 arrivals at once must show growing latency."""
    client = OpenAIClient(timed_server.url(), "synthetic")
    plan = LoadPlan("open", Arrivals(1000.0, "constant"), concurrency=1, count=10)
    records = asyncio.run(Engine(client, prompts_from_spec("synthetic:in=4,out=3"), plan).run())
    e2e = [(r.end - r.scheduled) * 1000 for r in records]  # type: ignore[operator]
    assert e2e[-1] > 9 * 40  # the last one waited for the nine before it
    assert (records[-1].sent - records[-1].scheduled) * 1000 > 300  # and that wait is visible as lag  # type: ignore[operator]


def test_server_errors_are_counted(aif_service) -> None:  # type: ignore[no-untyped-def]
    server = aif_service("synthetic-llm", ttft_ms=1.0, itl_ms=1.0, error_every=4)
    result = LoadRunner().openai(server, prompts="synthetic:in=4,out=2", concurrency=1, count=20)
    assert result.metrics()["error_rate"] == pytest.approx(0.25)
    assert result.error_samples == ['5x HTTP 500: {"error":"synthetic failure"}']


def test_llamacpp_streams_from_generated_model(llm_service) -> None:  # type: ignore[no-untyped-def]
    """Real llama.cpp on the tiny GGUF: no usage in its stream, one chunk per token."""
    result = LoadRunner().openai(llm_service, prompts="synthetic:in=20,out=16", concurrency=1, count=4)
    m = result.metrics()
    assert m["completed"] == 4
    assert m["mean_output_tokens"] == 16  # EOS is forbidden by the service's logit bias
    assert m["p50_ttft_ms"] > 0
    assert not any(r.tokens_estimated for r in result.records)


def test_request_bodies() -> None:
    request = LLMRequest("hello", 7, 1)
    path, body = OpenAIClient("http://x", "m", api="chat", extra_body={"ignore_eos": True}).body(request)
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True
    path, body = OpenAIClient("http://x", "m").body(request)
    assert (path, body["prompt"], body["max_tokens"]) == ("/v1/completions", "hello", 7)
    assert "min_tokens" not in body
    _, body = OpenAIClient("http://x", "m", continuous_usage=True, fixed_length=True).body(request)
    assert (body["ignore_eos"], body["min_tokens"]) == (True, 7)
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_synthetic_prompts_are_deterministic_per_index() -> None:
    prompts = SyntheticPrompts(Lengths(10, 20), Lengths(5, 5), seed=1)
    assert prompts.request(3) == prompts.request(3)
    assert prompts.request(3) != prompts.request(4)
    assert 10 <= prompts.request(7).input_tokens <= 20
    assert len(prompts.request(7).prompt.split()) == prompts.request(7).input_tokens


def test_prompt_files(tmp_path: Path) -> None:
    sharegpt = tmp_path / "sg.json"
    sharegpt.write_text(
        json.dumps(
            [
                {
                    "conversations": [
                        {"from": "human", "value": "Why is the sky blue?"},
                        {"from": "gpt", "value": "x" * 400},
                    ]
                },
                {"conversations": [{"from": "human", "value": "only one turn"}]},
            ]
        )
    )
    workload = prompts_from_spec(f"sharegpt:{sharegpt},max_out=50")
    assert workload.request(0) == LLMRequest("Why is the sky blue?", 50, 5)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a", "max_tokens": 3}\n\n{"prompt": "b"}\n')
    assert sorted(r.prompt for r in prompts_from_spec(f"file:{jsonl}").entries) == ["a", "b"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic:in=0,out=5", "in='0': need 1 <= LOW <= HIGH"),
        ("synthetic:in=5,colour=red", "unknown option(s) colour; valid: in, out, seed"),
        ("markov:x", "unknown prompt source 'markov:x'; use synthetic:"),
        ("sharegpt:/nonexistent.json", "prompt file /nonexistent.json does not exist"),
    ],
)
def test_bad_prompt_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        prompts_from_spec(spec)


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a ShareGPT entry"):
        prompts_from_spec(f"file:{path}")


SUITE = """
import pytest

@pytest.mark.slo("p99_ttft_ms <= 0.001", "error_rate <= 0.01", "output_tok_s >= 1e9")
def test_impossible(synthetic_llm_service, aif_load):
    aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=50, count=20)

@pytest.mark.slo("error_rate == 0", "p50_ttft_ms <= 5000")
def test_holds(synthetic_llm_service, aif_load):
    aif_load.sweep("rate", [20, 40], aif_load.openai, synthetic_llm_service, prompts="synthetic:in=4,out=4", count=20)
"""


def test_slo_breaches_fail_with_every_message_and_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*2 SLO breach(es):",
            "*  p99_ttft=*ms, expected <= 0.001 ms",
            "*  output_tok_s=* tok/s, expected >= 1e+09 tok/s",
            "*aifactory results (latencies in ms)*",
            "test*point*req*err%*req/s*p50 ms*p99 ms*p99 lag*SLO*figures",
            "test_impossible*rate=50/s*20*FAIL(2)*tok/s*ttft p99*",
            "test_holds*rate=20*20*PASS*",
            "test_holds*rate=40*20*PASS*",
        ]
    )


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            '"p99_tfft_ms <= 5"',
            "*test_x.py::test_x: @pytest.mark.slo: unknown metric 'p99_tfft_ms' in SLO 'p99_tfft_ms <= 5' "
            "(did you mean p99_ttft_ms or *); every metric is declared*in pytest_aifactory/core/metric_table.py*",
        ),
        ('"p99_ttft_ms => 5"', "*test_x.py::test_x: @pytest.mark.slo: malformed SLO 'p99_ttft_ms => 5'*"),
        ('"p99_ttft_ms <= {nope}"', "*SLO 'p99_ttft_ms <= {nope}' names 'nope', which the profile's vars do not set*"),
    ],
)
def test_malformed_slo_is_a_usage_error(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(test_x=f"import pytest\n\n@pytest.mark.slo({marker})\ndef test_x(aif_load):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-results-dir=res")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "achieved_rate" not in result.stderr.str()  # not the list of every metric
    assert not (pytester.path / "res").exists()  # found before anything ran: no run folder, report or log


def test_slo_variables_are_checked_for_selected_tests_only(pytester: pytest.Pytester) -> None:
    """A suite for another machine (its thresholds unset here) does not stop ``-m`` from running this one."""
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.database
        @pytest.mark.slo("p99_latency_ms <= {not_in_this_profile}")
        def test_other():
            pass

        @pytest.mark.filestorage
        def test_mine():
            pass
        """
    )
    selected = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "filestorage")
    selected.assert_outcomes(passed=1, deselected=1)
    everything = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert everything.ret == pytest.ExitCode.USAGE_ERROR
    everything.stderr.fnmatch_lines(["*test_x.py::test_other*names 'not_in_this_profile'*"])


def test_slo_without_load_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.slo('error_rate == 0')\ndef test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*this test has @pytest.mark.slo but ran no load*"])


@pytest.mark.parametrize("profile", ["local", pytest.param("ci-slurm", marks=pytest.mark.slurm)])
def test_load_from_two_client_jobs(pytester: pytest.Pytester, profile: str) -> None:
    """nodes=2: the load runs as two jobs of the profile with one start; records merge."""
    pytester.makepyfile(
        """
        def test_two_nodes(synthetic_llm_service, aif_load, aif_run):
            result = aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=2", rate=40, count=80, nodes=2)
            assert sorted(r.index for r in result.records) == list(range(80))
            assert {r.worker for r in result.records} == {"w0", "w1"}
            assert result.config["client_nodes"] == 2
            assert result.metrics()["achieved_rate"] > 30
            assert len([r for r in aif_run.registry.records() if r.service == "load-shard"]) == 2
        """
    )
    result = pytester.runpytest_subprocess(f"--aif-profile={profile}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
