"""Energy per unit of work: RAPL on a stand-in powercap tree, NVML through a stand-in of pynvml,
Slurm's ConsumedEnergy as this cluster's sacct gives it, and a real local run.

This machine has no ``/sys/class/powercap``, no GPU and no Slurm energy plugin, so the
counters are stand-ins strict enough to catch what each reader exists for: sub-zones and
``psys`` counted twice, a wrapped counter read as negative, a root-only file read as 0, a
missing source reported as 0 J.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_pytest, wait_for

from pytest_aifactory.core.errors import JobError
from pytest_aifactory.export.prometheus import final_registry
from pytest_aifactory.jobs.energy import (
    POWERCAP_ROOT_ENV,
    EnergyMeter,
    EnergyUnavailableError,
    NvmlEnergy,
    RaplEnergy,
)
from pytest_aifactory.jobs.slurm_queue import ENERGY_SACCT_TIMEOUT_S, SlurmQueue, parse_consumed_energy
from pytest_aifactory.workloads.energy import EnergyWatch, PointEnergy, cumulative_at

NOBODY = 65534


class PowercapTree:
    """A ``/sys/class/powercap`` as the kernel lays it out: zone folders, sub-zones, ``psys``, MMIO.

    ``energy_uj`` is mode 0400 like the kernel's since Linux 5.10 (root only).
    """

    def __init__(self, root: Path, packages: int = 2, max_range_uj: int = 262143328850) -> None:
        self.root = root
        self.max_range_uj = max_range_uj
        (root / "intel-rapl").mkdir(parents=True)  # the control type: no energy of its own
        (root / "intel-rapl" / "enabled").write_text("1\n")
        for n in range(packages):
            self._zone(f"intel-rapl:{n}", f"package-{n}")
            self._zone(f"intel-rapl:{n}/intel-rapl:{n}:0", "core")
            self._zone(f"intel-rapl:{n}/intel-rapl:{n}:1", "dram")
            os.symlink(f"intel-rapl:{n}/intel-rapl:{n}:0", root / f"intel-rapl:{n}:0")
            os.symlink(f"intel-rapl:{n}/intel-rapl:{n}:1", root / f"intel-rapl:{n}:1")
        self._zone(f"intel-rapl:{packages}", "psys")  # the whole platform: packages included
        self._zone("intel-rapl-mmio:0", "package-0")  # the MMIO interface to package 0 again

    def _zone(self, path: str, name: str) -> None:
        zone = self.root / path
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
        self.set(path, 0)

    def set(self, path: str, microjoules: int) -> None:
        """Write a zone's counter the way a reader can never see half of it."""
        target = self.root / path / "energy_uj"
        tmp = target.with_name("energy_uj.tmp")
        tmp.write_text(f"{microjoules}\n")
        tmp.chmod(0o400)
        os.replace(tmp, target)

    def add(self, path: str, joules: float) -> None:
        """Grow a zone's counter by ``joules``, wrapping at its range as the hardware does."""
        now = int((self.root / path / "energy_uj").read_text())
        self.set(path, (now + int(joules * 1e6)) % self.max_range_uj)


@pytest.fixture
def powercap(tmp_path: Path) -> PowercapTree:
    return PowercapTree(tmp_path / "powercap")


def test_rapl_sums_the_packages_and_nothing_counted_twice(powercap: PowercapTree) -> None:
    rapl = RaplEnergy(powercap.root)
    assert [path.parent.name for path, _ in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]
    powercap.add("intel-rapl:0", 5.0)
    powercap.add("intel-rapl:1", 3.0)
    powercap.add("intel-rapl:0/intel-rapl:0:0", 4.0)  # core: inside package 0 already
    powercap.add("intel-rapl:0/intel-rapl:0:1", 2.0)  # dram sub-zone: not CPU package energy
    powercap.add("intel-rapl:2", 100.0)  # psys
    powercap.add("intel-rapl-mmio:0", 5.0)
    assert rapl.joules() == pytest.approx(8.0)
    powercap.add("intel-rapl:1", 1.5)
    assert rapl.joules() == pytest.approx(9.5)  # cumulative since the source opened


def test_rapl_wrap_around_adds_the_counter_range(tmp_path: Path) -> None:
    tree = PowercapTree(tmp_path / "powercap", packages=1, max_range_uj=65_532_610_987)
    tree.set("intel-rapl:0", 65_532_610_987 - 2_000_000)  # 2 J below the range
    rapl = RaplEnergy(tree.root)
    tree.add("intel-rapl:0", 5.0)  # wraps: the file now reads 3 J
    assert int((tree.root / "intel-rapl:0" / "energy_uj").read_text()) == 3_000_000
    assert rapl.joules() == pytest.approx(5.0)
    tree.add("intel-rapl:0", 1.0)
    assert rapl.joules() == pytest.approx(6.0)


def test_no_powercap_is_not_available_saying_so(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailableError, match=r"no .*missing on this node \(no powercap driver\)"):
        RaplEnergy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnergyUnavailableError, match="no RAPL package zone"):
        RaplEnergy(tmp_path / "empty")


def _open_as_nobody(root: str, answer: Any) -> None:
    """In a forked child: drop to an unprivileged user (when root), then open the RAPL reader."""
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    try:
        RaplEnergy(Path(root))
        answer.send("opened")
    except EnergyUnavailableError as exc:
        answer.send(str(exc))


def test_root_only_energy_uj_is_not_available_with_the_reason() -> None:
    base = Path(tempfile.mkdtemp(prefix="aif-powercap-"))  # out of pytest's root-only tmp folder
    try:
        base.chmod(0o755)
        tree = PowercapTree(base / "powercap", packages=1)
        if os.geteuid() == 0:
            assert RaplEnergy(tree.root).joules() == 0.0  # root reads the 0400 file
        else:  # 0400 still lets its owner read: take that away too
            (tree.root / "intel-rapl:0" / "energy_uj").chmod(0o000)
        ours, theirs = multiprocessing.get_context("fork").Pipe()
        child = multiprocessing.get_context("fork").Process(target=_open_as_nobody, args=(str(tree.root), theirs))
        child.start()
        child.join(30)
        said = ours.recv()
    finally:
        shutil.rmtree(base)
    assert "intel-rapl:0/energy_uj is not readable by this user" in said, said
    assert "CVE-2020-8694" in said


class FakeNvml:
    """pynvml's functions the reader uses, as strict as NVML: nothing before ``nvmlInit``,
    an unknown index or UUID is an ``NVMLError``, and a GPU older than Volta has no total energy.
    """

    class NVMLError(Exception):
        pass

    def __init__(self, millijoules: list[int], uuids: list[str] | None = None, supported: bool = True) -> None:
        self.millijoules = millijoules
        self.uuids = uuids or [f"GPU-{i:08d}" for i in range(len(millijoules))]
        self.supported = supported
        self.started = 0
        self.fail_init = False

    def _check(self) -> None:
        if self.started <= 0:
            raise self.NVMLError("Uninitialized")

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")
        self.started += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.started -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.millijoules)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check()
        if not 0 <= index < len(self.millijoules):
            raise self.NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        self._check()
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return self.uuids.index(uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self._check()
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return self.millijoules[handle]


def test_nvml_sums_the_jobs_gpus_in_millijoules() -> None:
    nvml = FakeNvml([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    every = NvmlEnergy(nvml, visible=None)
    mine = NvmlEnergy(nvml, visible="1,3")
    by_uuid = NvmlEnergy(nvml, visible="GPU-00000002")
    nvml.millijoules = [m + 500 * (i + 1) for i, m in enumerate(nvml.millijoules)]  # 0.5, 1, 1.5, 2 J
    assert every.joules() == pytest.approx(5.0)
    assert mine.joules() == pytest.approx(3.0)
    assert by_uuid.joules() == pytest.approx(1.5)


def test_the_meter_shuts_nvml_down_when_closed(powercap: PowercapTree) -> None:
    nvml = FakeNvml([1000])
    meter = EnergyMeter({"rapl": lambda: RaplEnergy(powercap.root), "nvml": lambda: NvmlEnergy(nvml)})
    assert nvml.started == 1
    meter.close()
    assert nvml.started == 0
    assert meter.sources == {}


def test_nvml_without_total_energy_is_not_available() -> None:
    old = FakeNvml([0, 0], supported=False)
    with pytest.raises(EnergyUnavailableError, match=r"needs Volta or newer.*Not Supported"):
        NvmlEnergy(old)
    assert old.started == 0  # shut down again
    with pytest.raises(EnergyUnavailableError, match="no GPU for this job"):
        NvmlEnergy(FakeNvml([5]), visible="")
    broken = FakeNvml([5])
    broken.fail_init = True
    with pytest.raises(EnergyUnavailableError, match=r"NVML cannot start.*Driver Not Loaded"):
        NvmlEnergy(broken)


def test_meter_drops_a_source_that_fails_and_keeps_why(powercap: PowercapTree) -> None:
    nvml = FakeNvml([1000])
    meter = EnergyMeter({"rapl": lambda: RaplEnergy(powercap.root), "nvml": lambda: NvmlEnergy(nvml)})
    powercap.add("intel-rapl:0", 2.0)
    nvml.millijoules = [3000]
    first = meter.sample()
    assert first["joules"] == {"rapl": pytest.approx(2.0), "nvml": pytest.approx(2.0)}
    assert first["missing"] == {}
    nvml.supported = False
    second = meter.sample()
    assert set(second["joules"]) == {"rapl"}
    assert "NVML energy read failed: Not Supported" in second["missing"]["nvml"]
    nvml.supported = True
    assert set(meter.sample()["joules"]) == {"rapl"}  # a counter with a gap says nothing of a window


def test_this_machine_offers_what_its_node_has() -> None:
    """On this machine (no powercap, no GPU) both sources are missing, each with its reason, and no 0."""
    meter = EnergyMeter()
    sample = meter.sample()
    for source in ("rapl", "nvml"):
        assert (source in sample["joules"]) != (source in sample["missing"]), sample
    if not Path("/sys/class/powercap").exists():
        assert "no /sys/class/powercap on this node" in sample["missing"]["rapl"]


def test_cumulative_at_interpolates_between_reads() -> None:
    samples = [
        {"t": 10.0, "joules": {"rapl": 0.0}},
        {"t": 11.0, "joules": {"rapl": 50.0}},
        {"t": 12.0, "joules": {"rapl": 70.0}},
    ]
    assert cumulative_at(samples, "rapl", 10.5) == pytest.approx(25.0)
    assert cumulative_at(samples, "rapl", 11.5) == pytest.approx(60.0)
    assert cumulative_at(samples, "rapl", 12.5) is None  # past the last read: not bracketed
    assert cumulative_at(samples, "nvml", 11.0) is None


def test_point_energy_per_unit_and_nothing_without_a_source() -> None:
    energy = PointEnergy(window_s=10.0, joules={"rapl": 300.0, "nvml": 700.0, "sacct": 1500.0})
    figures = energy.figures({"request_s": 20.0, "output_tok_s": 1000.0}, ("request", "output_token"))
    assert energy.source == "rapl+nvml"  # Slurm's node figure would count the packages again
    assert figures["energy_j"] == 1000.0
    assert figures["energy_sacct_j"] == 1500.0
    assert figures["j_per_request"] == pytest.approx(100.0 / 20.0)  # 100 W over 20 req/s
    assert figures["j_per_output_token"] == pytest.approx(0.1)
    gib = PointEnergy(window_s=2.0, joules={"sacct": 400.0}).figures({"mib_s": 512.0}, ("gib",))
    assert gib["j_per_gib"] == pytest.approx(400.0)  # 200 W over 0.5 GiB/s
    nothing = PointEnergy(window_s=10.0, missing={"rapl": "no powercap"})
    assert nothing.figures({"request_s": 20.0}, ("request",)) == {}
    assert nothing.describe()["energy_source"] == "not available"


def test_energy_metrics_reach_the_pushgateway_families() -> None:
    metrics = {"energy_j": 12.5, "energy_rapl_j": 12.5, "j_per_request": 0.25}
    registry = final_registry([{"label": "rate=20", "result": {"metrics": metrics}}])
    assert registry.get_sample_value("aifactory_energy_joules", {"point": "rate=20", "source": "total"}) == 12.5
    assert registry.get_sample_value("aifactory_energy_joules", {"point": "rate=20", "source": "rapl"}) == 12.5
    value = registry.get_sample_value("aifactory_energy_per_unit_joules", {"point": "rate=20", "unit": "request"})
    assert value == 0.25
    none = final_registry([{"label": "p", "result": {"metrics": {"requests": 3.0}}}])
    assert none.get_sample_value("aifactory_energy_joules", {"point": "p", "source": "total"}) is None


def _append(path: Path, t: float, joules: dict[str, float], missing: dict[str, str]) -> None:
    with path.open("a") as out:
        out.write(json.dumps({"t": t, "joules": joules, "missing": missing}) + "\n")


def _never_sacct(job: str) -> tuple[float | None, str]:
    raise AssertionError(f"sacct asked for job {job} although the node's counters work")


def test_watch_cuts_the_span_from_the_reads_around_its_ends(tmp_path: Path) -> None:
    samples, no_gpu = tmp_path / "energy.jsonl", {"nvml": "no GPU"}
    watch = EnergyWatch(samples, "42", _never_sacct, wait_s=10.0)
    first = time.time() - 1
    _append(samples, first, {"rapl": 0.0}, no_gpu)
    watch.before()  # the node's counter works: Slurm is not asked
    watch.after()
    span = (first + 0.25, time.time())  # the load's own span, from its records
    last = time.time() + 0.2

    def read_later() -> None:  # the job's reader, a little behind the load's end
        time.sleep(0.3)
        _append(samples, last, {"rapl": 40.0}, no_gpu)

    writer = threading.Thread(target=read_later)
    writer.start()
    energy = watch.finish(span)  # waits for the read past the end
    writer.join()
    assert energy.window_s == pytest.approx(span[1] - span[0])
    assert energy.joules["rapl"] == pytest.approx(40.0 * (span[1] - span[0]) / (last - first))
    assert energy.missing["nvml"] == "no GPU"
    assert "not read: the node's counters were working" in energy.missing["sacct"]
    assert energy.source == "rapl"


def test_a_frozen_counter_is_not_available_never_0_joules(tmp_path: Path) -> None:
    """Some VMs expose a powercap whose energy_uj never moves: 0 J over a load is no measurement."""
    samples = tmp_path / "energy.jsonl"
    now = time.time()
    _append(samples, now - 1, {"rapl": 12.5}, {"nvml": "no GPU"})
    watch = EnergyWatch(samples)
    watch.before()
    for t in (now, now + 1):  # the job's reads during and after the load
        _append(samples, t, {"rapl": 12.5}, {"nvml": "no GPU"})
    energy = watch.finish((now - 0.5, now + 0.5))
    assert "rapl" not in energy.joules
    assert "the rapl counter did not advance over the load's 1 s" in energy.missing["rapl"]
    assert energy.source == "not available"
    assert energy.figures({"request_s": 20.0}, ("request",)) == {}


def test_watch_falls_back_on_sacct_only_without_node_counters(tmp_path: Path) -> None:
    samples = tmp_path / "energy.jsonl"
    _append(samples, time.time(), {}, {"rapl": "no powercap", "nvml": "no GPU"})
    answers = iter([(1000.0, ""), (1600.0, "")])
    watch = EnergyWatch(samples, "42", lambda job: next(answers))
    watch.before()
    time.sleep(0.2)  # the load
    watch.after()
    asked, answered = (t for t, _ in watch._sacct_reads)
    middle = (asked + answered) / 2
    half = watch.finish((asked, middle))  # half the reads' gap: half the 600 J at Slurm's mean power
    assert half.joules == {"sacct": pytest.approx(300.0, rel=1e-4)}
    energy = watch.finish((asked, answered))
    assert energy.joules == {"sacct": pytest.approx(600.0, rel=1e-4)}
    assert energy.source == "sacct"
    assert energy.missing == {"rapl": "no powercap", "nvml": "no GPU"}


def test_watch_reads_the_jobs_file_from_its_last_read_on(tmp_path: Path) -> None:
    """A long-lived service's energy.jsonl is read from the last line before the load, then by offset."""
    samples = tmp_path / "energy.jsonl"
    now = time.time()
    for i in range(2000):  # an hour of reads before this load
        _append(samples, now - 2000 + i, {"rapl": float(i)}, {})
    watch = EnergyWatch(samples)
    watch.before()
    _append(samples, now + 1, {"rapl": 3000.0}, {})
    energy = watch.finish((now - 0.5, now + 0.5))
    assert energy.joules["rapl"] == pytest.approx(1001.0 * 1.0 / 2.0)  # 1999 -> 3000 over 2 s, 1 s of it
    assert len(watch._read) == 2  # the read before the load and the one past it, not the whole hour


# What this cluster's sacct (acct_gather_energy/none) prints for `-n -X -P -o ConsumedEnergyRaw`: "0" for
# an ended job, "" for a running one (its allocation line); a site with an energy plugin prints joules.
@pytest.mark.parametrize(
    ("text", "joules"),
    [
        ("0\n", None),
        ("\n", None),
        ("", None),
        ("18446744073709551614\n", None),  # NO_VAL64: a node's reading failed
        ("183625\n", 183625.0),
        ("183625\n0\n", 183625.0),
    ],
)
def test_parse_consumed_energy(text: str, joules: float | None) -> None:
    value, why = parse_consumed_energy(text, "7")
    assert value == joules
    if joules is None:
        assert "sacct gives no ConsumedEnergy for job 7" in why
        assert "AcctGatherEnergyType" in why or "NO_VAL" in why


def _sacct_line(job_id: str, state: str) -> str | None:
    """sacct's line of the job once it shows ``state``."""
    done = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobIDRaw,State,ConsumedEnergyRaw"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip() if f"|{state}|" in done.stdout else None


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_this_clusters_sacct_gives_not_available_rather_than_0(tmp_path: Path) -> None:
    """A real job on the running cluster (AcctGatherEnergyType none), while it runs and once it ended."""
    release = tmp_path / "release"  # the job runs until the test has seen it RUNNING (no race with a sleep)
    wait = f"while [ ! -e {release} ]; do sleep 0.2; done"
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--time=1", "--output=/dev/null", "--wrap", wait],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    queue = SlurmQueue()
    for state in ("RUNNING", "COMPLETED"):
        raw = wait_for(f"sacct to show job {job_id} {state}", functools.partial(_sacct_line, job_id, state))
        print(f"sacct -n -X -P -o JobIDRaw,State,ConsumedEnergyRaw: {raw!r}")  # the format the parser is tested on
        joules, why = queue.consumed_energy(job_id)
        assert joules is None, raw
        assert f"sacct gives no ConsumedEnergy for job {job_id}" in why
        release.touch()


SUITE = """
def test_llm(synthetic_llm_service, aif_load):
    aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=8", rate=20, count=30, repeats=2, workers=2)
"""
WATTS = 50.0
STALL_S = 0.3


@pytest.fixture
def driven_powercap(tmp_path: Path) -> Iterator[PowercapTree]:
    """A stand-in tree whose package 0 draws ``WATTS`` in wall-clock time (a real package's range: no wrap)."""
    tree = PowercapTree(tmp_path / "powercap", packages=1)
    stop = threading.Event()
    started = time.time()

    def drive() -> None:
        while not stop.wait(0.02):
            tree.set("intel-rapl:0", int((time.time() - started) * WATTS * 1e6) % tree.max_range_uj)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    yield tree
    stop.set()
    thread.join()


PROFILES = [pytest.param("local"), pytest.param("ci-slurm", marks=pytest.mark.slurm)]


def _results(pytester: pytest.Pytester, profile: str, env: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    """The two repeats' results and their combination, and the terminal output."""
    pytester.makepyfile(SUITE)
    options = (f"--aif-profile={profile}", "--aif-results-dir=res", "--aif-run-id=energy")
    done = run_pytest(pytester.path, *options, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((pytester.path / "res" / "energy" / "report.json").read_text())
    results = report["tests"][0]["results"]
    assert [r["role"] for r in results] == ["repeat", "repeat", "point"]
    return results, done.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile", PROFILES)
def test_a_real_run_reports_joules_per_request_from_the_services_node(
    pytester: pytest.Pytester, driven_powercap: PowercapTree, profile: str
) -> None:
    """The service's job (a local process, or a Slurm job on this machine's node) reads the stand-in tree."""
    results, stdout = _results(pytester, profile, {POWERCAP_ROOT_ENV: str(driven_powercap.root)})
    for result in results[:2]:
        config, metrics = result["config"], result["metrics"]
        assert config["energy_source"] == "rapl", config
        window = config["energy_window_s"]
        # The window is the load's own span (its duration_s, as the job's wall clock sees it), not the
        # runner's setup around it (starting two worker processes) and merge after it.
        assert window == pytest.approx(metrics["duration_s"], abs=0.01)
        # Reads 0.5 s apart, interpolated; the counter may lag its driver thread by a stall of a loaded
        # machine. A wrong window (the job's life) or unit (uJ, mJ) is off by far more.
        assert metrics["energy_j"] == pytest.approx(WATTS * metrics["duration_s"], abs=WATTS * STALL_S)
        assert metrics["energy_rapl_j"] == metrics["energy_j"]
        power = metrics["energy_j"] / window
        assert metrics["j_per_request"] == pytest.approx(power / metrics["request_s"], rel=0.01)
        assert metrics["j_per_output_token"] == pytest.approx(power / metrics["output_tok_s"], rel=0.01)
        assert "nvml" in config["energy_not_available"]
        assert any(note.startswith("energy ") and "from rapl" in note for note in result["notes"])
    mean = (results[0]["metrics"]["j_per_request"] + results[1]["metrics"]["j_per_request"]) / 2
    assert results[2]["metrics"]["j_per_request"] == pytest.approx(mean)  # the repeats' combination
    assert "J/req" in stdout  # the results table's column


@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile", PROFILES)
def test_a_real_run_without_a_source_has_no_energy_figure(
    pytester: pytest.Pytester, tmp_path: Path, profile: str
) -> None:
    results, _ = _results(pytester, profile, {POWERCAP_ROOT_ENV: str(tmp_path / "no-powercap")})
    for result in results:
        config, metrics = result["config"], result["metrics"]
        assert config["energy_source"] == "not available"
        assert "no-powercap on this node (no powercap driver)" in config["energy_not_available"]["rapl"]
        sacct = config["energy_not_available"]["sacct"]
        if profile == "local":
            assert sacct == "not a Slurm job"
        else:  # this cluster's sacct answers '' for the running service job: no plugin, not 0 J
            assert "sacct gives no ConsumedEnergy for job" in sacct, sacct
        assert not {name for name in metrics if name.startswith(("energy_", "j_per_"))}, metrics


VECTOR_SUITE = """
from pytest_aifactory.workloads.vectors.datasets import VectorDataset

def test_search(aif_vector_store, aif_load, tmp_path):
    data = VectorDataset("random", count=500, dim=8, queries=20)
    for name in ("chroma", "faiss"):
        aif_load.vector_search(aif_vector_store(name), data, k=10, concurrency=2, count=40, cache_dir=tmp_path)
"""


@pytest.mark.timeout(300)
def test_vector_search_reports_joules_per_query_of_the_stores_node(
    pytester: pytest.Pytester, driven_powercap: PowercapTree
) -> None:
    pytester.makepyfile(VECTOR_SUITE)
    env = {POWERCAP_ROOT_ENV: str(driven_powercap.root)}
    done = run_pytest(pytester.path, "--aif-results-dir=res", "--aif-run-id=vec", env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((pytester.path / "res" / "vec" / "report.json").read_text())
    chroma, faiss = report["tests"][0]["results"]
    assert chroma["config"]["energy_source"] == "rapl"
    window = chroma["config"]["energy_window_s"]
    assert window == pytest.approx(chroma["metrics"]["duration_s"], abs=0.01)  # the load's own span
    assert chroma["metrics"]["energy_j"] == pytest.approx(WATTS * chroma["metrics"]["duration_s"], abs=WATTS * STALL_S)
    power = chroma["metrics"]["energy_j"] / window
    assert chroma["metrics"]["j_per_query"] == pytest.approx(power / chroma["metrics"]["request_s"], rel=0.01)
    assert faiss["config"]["energy_source"] == "not available"  # in the test process: no service's node
    assert faiss["config"]["energy_not_available"] == {
        "node": "faiss is not a service this run started: its node is not known"
    }
    assert "j_per_query" not in faiss["metrics"]


def test_watch_of_a_job_without_an_energy_reader_does_not_wait(tmp_path: Path) -> None:
    watch = EnergyWatch(tmp_path / "energy.jsonl", wait_s=30.0)
    watch.before()
    began = time.monotonic()
    energy = watch.finish((time.time() - 1, time.time()))
    assert time.monotonic() - began < 5.0  # not the 30 s deadline
    assert energy.source == "not available"
    assert energy.missing["rapl"].startswith("no read in ")


def test_sacct_energy_goes_through_the_queues_counted_commands() -> None:
    """The run's count of Slurm commands includes the energy reads: one try, a short time limit."""
    asked: list[tuple[list[str], float]] = []

    def sacct(argv: Any, timeout_s: float = 60.0) -> str:
        asked.append((list(argv), timeout_s))
        if len(asked) > 1:
            raise JobError("sacct: error: Problem talking to the database")
        return "183625\n"

    queue = SlurmQueue(runner=sacct, retry_delay_s=30.0)  # a retry would hold the load up 30 s
    assert queue.consumed_energy("42") == (183625.0, "")
    assert asked == [(["sacct", "-n", "-X", "-P", "-j", "42", "-o", "ConsumedEnergyRaw"], ENERGY_SACCT_TIMEOUT_S)]
    began = time.monotonic()
    joules, why = queue.consumed_energy("42")
    assert time.monotonic() - began < 5.0
    assert joules is None
    assert "Problem talking to the database" in why
    assert queue.calls["sacct"] == 2
    assert ENERGY_SACCT_TIMEOUT_S <= 10.0
