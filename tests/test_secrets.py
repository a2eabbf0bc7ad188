"""Secrets are masked on values, field by field; numbers and settings never are (a real Pushgateway checks)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import aifactory, free_port, http_ready, wait_for
from prometheus_client import CollectorRegistry, Gauge

from pytest_aifactory.core.secrets import Redactor, is_secret_name
from pytest_aifactory.delivery.pushgateway import GatewayTarget, Pushgateway

pytestmark = pytest.mark.timeout(120)

SECRET = "planted-secret-5e6f7a8b"


@pytest.fixture
def gateway_url() -> Iterator[str]:
    """A real Pushgateway on 127.0.0.1."""
    port = free_port()
    process = subprocess.Popen(
        ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the pushgateway to be ready", lambda: http_ready(f"{url}/-/ready"), timeout_s=30)
        yield url
    finally:
        process.kill()
        process.wait()


SECRET_NAMES = [
    "AWS_SECRET_ACCESS_KEY",
    "AIF_S3_SECRET_KEY",
    "AIF_S3_ACCESS_KEY",
    "HF_TOKEN",
    "PGPASSWORD",
    "API_KEY",
    "x-api-key",
    "apiKey",
    "HFToken",
    "OPENAIAPIKEY",
    "DB_PASS",
    "MYSQL_PWD",
    "GOOGLE_CREDENTIALS",
    "db.password",
    *("DBPASS", "ROOTPASS", "ADMINPASS", "MYSQL_ROOTPASS"),  # glued PASS
    *("PRIVATEKEY", "MASTERKEY", "SSHKEY", "LICENSEKEY", "ENCRYPTIONKEY", "APP_SIGNINGKEY"),  # glued KEY
]
INNOCENT_NAMES = [
    *("MAX_TOKENS", "KEYCLOAK_URL", "BATCH_TOKENS", "PASSAGES", "TOKENIZER", "PWD", "OLDPWD"),
    *("HOTKEY", "MONKEY", "TURNKEY", "PROXY_BYPASS", "COMPASS_URL"),  # words that end in KEY or PASS
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_secret_name_is_found_by_its_whole_parts(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", INNOCENT_NAMES)
def test_a_name_that_only_contains_a_secret_word_is_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_a_secret_named_value_is_masked_whatever_it_looks_like() -> None:
    """An all-digit password is a secret; the same digits as a number are never touched."""
    redactor = Redactor(environ={"DB_PASSWORD": "12345678", "KEYCLOAK_URL": "https://keycloak.example:8443"})
    assert redactor.secrets == ["12345678"]
    data = {"line": "login with 12345678 to https://keycloak.example:8443", "bytes": 12345678}
    assert redactor.clean(data) == {"line": "login with *** to https://keycloak.example:8443", "bytes": 12345678}


def test_an_all_digit_secret_is_masked_only_as_a_whole_number() -> None:
    """Its digits inside a job id or a duration are not the secret: they stay."""
    redactor = Redactor(environ={"DB_PASSWORD": "123456"})
    assert redactor.text("job 1234567 took 0.1234569 s") == "job 1234567 took 0.1234569 s"
    assert redactor.text("v0.123456, 123456.5 and 9123456") == "v0.123456, 123456.5 and 9123456"
    assert redactor.text("pin 123456. login=123456, pw-123456x") == "pin ***. login=***, pw-***x"


def test_numbers_short_values_and_settings_are_never_masked() -> None:
    env = {"MAX_TOKENS": "4096", "PGPASSWORD": "pw", "HF_TOKEN": SECRET, "RATE": "2.5e3", "MODEL": "llama-7b-chat"}
    named = {"API_KEY": "profile-key-123", "BATCH_TOKENS": "1e6", "MAX_NEW_TOKENS": "8192000"}
    redactor = Redactor(environ=env, named=named, extra=["given-x1"])
    assert redactor.secrets == [SECRET, "profile-key-123", "given-x1"]
    data = {"max_tokens": 4096, "text": "4096 tokens of llama-7b-chat", "auth": f"Bearer {SECRET}", "n": [2.5e3]}
    assert redactor.clean(data) == {
        "max_tokens": 4096,
        "text": "4096 tokens of llama-7b-chat",
        "auth": "Bearer ***",
        "n": [2500.0],
    }
    assert redactor.clean({"folder": Path(f"/tmp/{SECRET}")}) == {"folder": "/tmp/***"}


def test_push_with_a_numeric_setting_is_accepted_and_carries_no_secret(
    gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_TOKENS", "4096")
    monkeypatch.setenv("AIF_PLANTED_API_KEY", SECRET)
    monkeypatch.setenv("AIF_PLANTED_PASSWORD", "24632324")  # digits of the pushed memory value
    registry = CollectorRegistry()
    Gauge("aifactory_service_memory_bytes", "memory", ["model", "db"], registry=registry).labels(
        f"m-{SECRET}", "pw-24632324"
    ).set(24632324096)
    Gauge("aifactory_max_tokens", "the setting", registry=registry).set(4096)
    monkeypatch.setenv("AIF_PLANTED_TOKEN", "246323")  # digits of the job id: masked only as a whole number
    Gauge("aifactory_job", "a job", ["job_id"], registry=registry).labels("2463232").set(1)
    gateway = Pushgateway(GatewayTarget(url=gateway_url), "run-4096", tmp_path / "spool", Redactor())
    assert gateway.push(f"test_{SECRET}", registry, extra_labels={"job_id": "2463232"}), gateway.failures
    assert gateway.spooled() == []
    metrics = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    job = next(line for line in metrics.splitlines() if line.startswith("aifactory_job{"))
    assert 'job_id="2463232"' in job  # the label, and the grouping path's label, intact
    memory = next(line for line in metrics.splitlines() if line.startswith("aifactory_service_memory_bytes{"))
    assert 'model="m-***"' in memory
    assert 'db="pw-***"' in memory
    assert 'test="test_***"' in memory
    assert memory.endswith(" 2.4632324096e+10")
    max_tokens = next(line for line in metrics.splitlines() if line.startswith("aifactory_max_tokens{"))
    assert max_tokens.endswith(" 4096")
    assert SECRET not in metrics


def test_resend_reports_why_the_gateway_rejects_a_spooled_push(gateway_url: str, tmp_path: Path) -> None:
    """A body masked over its text (as it used to be) is refused with HTTP 400: resend says why."""
    spool = tmp_path / "res" / "bad" / "spool" / "pushgateway"
    spool.mkdir(parents=True)
    path = Pushgateway(GatewayTarget(url=gateway_url), "bad", spool, Redactor()).path("test_bad")
    body = "# HELP aifactory_node_memory_used_bytes memory\n# TYPE aifactory_node_memory_used_bytes gauge\n"
    body += "aifactory_node_memory_used_bytes 2.463232***e+10\n"
    file = spool / "bad.json"
    file.write_text(json.dumps({"method": "PUT", "path": path, "body": body}))
    done = aifactory("resend", "bad", "--results-dir", str(tmp_path / "res"), "--pushgateway", gateway_url)
    assert done.returncode == 1
    assert "sent 0 spooled push(es)" in done.stdout
    assert 'HTTP 400: text format parsing error in line 3: expected float as value, got "2.463232***e+10"' in (
        done.stderr
    )
    assert str(file) in done.stderr
