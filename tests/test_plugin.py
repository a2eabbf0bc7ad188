"""The pytest layer as a citizen of other runs: inert until used, options with ini twins, hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import KILL_SERVICE

from pytest_aifactory.plugin.options import OPTIONS

pytestmark = pytest.mark.timeout(240)

# Records, at the end of the run, what the plugin must not have changed.
_OBSERVER = """
import atexit, json, os, signal

_BEFORE = {}

def pytest_configure(config):
    _BEFORE.update(sigterm=repr(signal.getsignal(signal.SIGTERM)), env=sorted(os.environ), atexit=atexit._ncallbacks())

def pytest_unconfigure(config):
    after = dict(sigterm=repr(signal.getsignal(signal.SIGTERM)), env=sorted(os.environ), atexit=atexit._ncallbacks())
    with open(os.environ["OBSERVED"], "w") as handle:
        json.dump({"before": _BEFORE, "after": after}, handle)
"""


def _tree(root: Path) -> set[str]:
    """Every path under ``root``, except what pytester itself writes (captured output, basetemp)."""
    ours = {"stdout", "stderr", "__pycache__"}
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not ours & set(p.relative_to(root).parts) and not p.relative_to(root).parts[0].startswith("runpytest")
    }


NOTHING_USED = [[], ["--collect-only"], ["--markers"], ["--help"], ["--version"], ["-m", "inference"]]
INFORMATION_ONLY = [["--collect-only"], ["--fixtures-per-test"], ["--markers"]]


@pytest.mark.parametrize("args", NOTHING_USED)
def test_a_run_that_uses_nothing_of_the_plugin_leaves_no_trace(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    pytester.makeconftest(_OBSERVER)
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    observed = tmp_path / "observed.json"
    monkeypatch.setenv("OBSERVED", str(observed))
    before = _tree(pytester.path)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", *args)
    assert result.ret in (0, 5), result.stdout.str()
    assert _tree(pytester.path) == before
    if "--help" in args or "--version" in args:
        return  # pytest_configure/unconfigure of conftests do not run
    state = json.loads(observed.read_text())
    changed = (set(state["after"].pop("env")) ^ set(state["before"].pop("env"))) - {"PYTEST_CURRENT_TEST"}
    assert not changed, f"environment variables set or removed: {changed}"
    assert state["after"] == state["before"]


def test_the_plugin_markers_work_with_strict_markers_in_any_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.inference
        @pytest.mark.slurm
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    assert not (pytester.path / "aif-results").exists()


def test_a_benchmark_starts_the_run_and_reports_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain():
            pass

        def test_load(synthetic_llm_service, aif_load):
            aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, count=10)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-run-id=used", "-k", "load")
    result.assert_outcomes(passed=1, deselected=1)
    assert (pytester.path / "aif-results" / "used" / "report.json").is_file()
    result.stdout.fnmatch_lines(["aifactory: profile local, run used, results in *aif-results"])


def test_a_running_load_shows_its_progress_on_the_terminal_not_in_the_captured_output(
    pytester: pytest.Pytester,
) -> None:
    """Written from inside the test body, the progress line must not be captured with the test's output."""
    pytester.makepyfile(
        """
        def test_load(synthetic_llm_service, aif_load):
            aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, duration_s=1.5)
            print("printed by the test")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rP")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    captured = out.split("Captured stdout call", 1)[1]  # -rP shows a passing test's captured output
    assert "printed by the test" in captured
    assert "[aifactory] test_load" not in captured
    result.stdout.fnmatch_lines(["[[]aifactory] test_load rate=20/s: * s, * sent, * done, 0 errors, * in flight"])


def test_every_option_that_makes_sense_has_an_ini_twin(pytester: pytest.Pytester) -> None:
    without_twin = {option.flag for option in OPTIONS if not option.ini}
    assert without_twin == {"--aif-run-id", "--aif-report"}
    config = pytester.parseconfig()
    for option in OPTIONS:
        if option.ini:
            assert config.getini(option.dest) == option.default, option.dest


def test_an_ini_value_is_parsed_and_a_bad_one_names_the_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naif_pushgateway = gateway:9091\n")
    pytester.makepyfile("def test_uses(aif_run):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*ini aif_pushgateway*--aif-pushgateway: expected an http:// or https:// URL*"])


def test_a_dead_service_fails_only_the_tests_that_requested_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(service_killer=KILL_SERVICE)
    pytester.makepyfile(
        """
        from service_killer import kill_and_wait

        def test_kills_its_service(aif_shared_service):
            service = aif_shared_service("http")
            kill_and_wait(service)

        def test_uses_another_shared_service(synthetic_llm_service):
            assert synthetic_llm_service.port > 0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-run-id=dead")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*_ test_kills_its_service _*", "service 'http' died while it was in use*"])


def test_another_plugin_receives_every_result_through_the_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import json, os

        def pytest_aifactory_result(item, result):
            with open("seen.jsonl", "a") as handle:
                handle.write(json.dumps({"test": item.name, "label": result.label, "n": result.completed}) + "\\n")
        """
    )
    pytester.makepyfile(
        """
        def test_sweep(synthetic_llm_service, aif_load):
            aif_load.sweep("rate", [10, 20], aif_load.openai, synthetic_llm_service,
                           prompts="synthetic:in=4,out=4", count=10)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    seen = [json.loads(line) for line in (pytester.path / "seen.jsonl").read_text().splitlines()]
    assert [(s["test"], s["n"]) for s in seen] == [("test_sweep", 10), ("test_sweep", 10)]
    assert "aifactory" not in (pytester.path / "junit.xml").read_text(), "results leak into --junitxml"


def test_a_profile_naming_an_unknown_service_is_a_usage_error_before_any_test_runs(pytester: pytest.Pytester) -> None:
    profile = pytester.path / "mine.yaml"
    profile.write_text("name: mine\nexecutor: local\nservices:\n  vllmm:\n    cpus: 2\n")
    pytester.makepyfile("def test_uses(aif_run):\n    raise AssertionError('must not run')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--aif-profile={profile}")
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*--aif-profile: {profile}: unknown service 'vllmm'; known services: *vllm*"])


def test_aif_llm_picks_the_llm_service_and_an_unknown_one_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_llm(aif_profile):\n    assert aif_profile.llm == 'synthetic-llm'\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-llm=synthetic-llm").assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-llm=vllmm")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--aif-llm: *unknown service 'vllmm'; known services: *vllm*"])


def test_a_missing_service_executable_names_the_package_that_provides_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_aifactory.services.spec import ServiceSpec

        def test_start(aif_service):
            spec = ServiceSpec(name="lite", command=("no-such-server-binary",), ports=("http",),
                               meta={"provided_by": "the PyPI package no-such-server"})
            aif_service(spec)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*executable 'no-such-server-binary' not found on PATH*it is provided by the PyPI package no-such-server*"]
    )


@pytest.mark.parametrize("args", INFORMATION_ONLY)
def test_information_options_never_start_the_run_of_a_benchmark(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile("def test_uses(aif_run):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str()
    assert not (pytester.path / "aif-results").exists()


def test_xdist_workers_share_the_run_s3_keys_without_any_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_key(aif_run, n):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
            with open(f"key-{worker}-{n}", "w") as handle:
                handle.write(os.environ["AIF_S3_ACCESS_KEY"] + os.environ["AIF_S3_SECRET_KEY"])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=4)
    keys = {path.read_text() for path in pytester.path.glob("key-gw*")}
    assert len(keys) == 1
    assert len(keys.pop()) == 64


def test_the_generated_s3_keys_are_masked_in_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        def test_leaks(aif_run):
            secret = os.environ["AIF_S3_SECRET_KEY"]
            open("secret.txt", "w").write(secret)
            raise AssertionError(f"the key is {secret}")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--aif-run-id=masked")
    result.assert_outcomes(failed=1)
    secret = (pytester.path / "secret.txt").read_text()
    report = (pytester.path / "aif-results" / "masked" / "report.json").read_text()
    assert "the key is" in report
    assert secret not in report
