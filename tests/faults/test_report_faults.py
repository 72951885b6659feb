"""The report killed mid-write, stopped by SIGTERM, or out of disk: a report folder is whole or not
there (it is assembled under a hidden name and renamed into place), and the next run succeeds."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sensorstream.producer import produce
from sensorstream.simulator import Simulator
from support.cli import assert_one_line_error, cli
from support.cluster import env_for, kill_tree, popen
from support.readings import stepping_clock

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

REPORT = ("report", "--format", "csv,parquet,json")
FILES = {"sensor_report.csv", "sensor_report.parquet", "sensor_report.json", "quality.json"}


@pytest.fixture
def topic(cluster, cli_env, tmp_path):
    settings = cluster.settings(tmp_path)
    sim = Simulator(sensors=10, seed=91, clock=stepping_clock(), bad_ratio=0.02)
    assert produce(settings, sim, count=20_000, rate=0).acked == 20_000
    return settings, env_for(cli_env, settings)


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def whole(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} == FILES


def test_report_killed_mid_write(topic, figures):
    settings, env = topic
    reports = Path(settings.report_dir)
    log = reports.parent / "report.log"
    proc = popen(env, *REPORT, log=log)
    staged_seen = False
    try:
        while proc.poll() is None:
            if reports.exists() and any(p.name.endswith(".partial") for p in reports.iterdir()):
                staged_seen = True
                time.sleep(random.uniform(0, 0.3))
                break
            time.sleep(0.01)
    finally:
        kill_tree(proc)
    shown = visible(reports)
    figures(
        f"SIGKILL {'while the report was being written' if staged_seen else 'after it finished'}: "
        f"{len(shown)} visible folder(s), {sum(not whole(f) for f in shown)} incomplete; hidden leftovers "
        f"{len([p for p in reports.iterdir() if p.name.startswith('.')]) if reports.exists() else 0}"
    )
    assert staged_seen, log.read_text()[-3000:]
    assert all(whole(f) for f in shown)
    again = cli(env, *REPORT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(visible(reports)) == len(shown) + 1 and all(whole(f) for f in visible(reports))


def test_report_disk_full(topic, tmp_path, figures):
    """A 1 MiB tmpfs for the report folder, filled up first: a one-line error, nothing visible; once
    space is freed, the next run succeeds."""
    _settings, env = topic
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"this test mounts a small tmpfs and needs root: {done.stderr}"
    try:
        env = {**env, "REPORT_DIR": str(mount / "reports")}
        filler = mount / "filler"
        with open(filler, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"x" * 4096)
            except OSError:  # No space left on device: full
                pass
        full = cli(env, *REPORT, timeout=600)
        reports = mount / "reports"
        figures(
            f"disk full: exit {full.returncode}: {full.stderr.strip().splitlines()[-1]}; visible folders "
            f"{len(visible(reports))}"
        )
        assert_one_line_error(full, "No space left on device", str(reports))
        assert visible(reports) == []
        filler.unlink()
        again = cli(env, *REPORT, timeout=600)
        figures(f"space freed: exit {again.returncode}, visible folders {len(visible(reports))}")
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(visible(reports)) == 1 and whole(visible(reports)[0])
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_sigterm_to_report(topic, figures):
    settings, env = topic
    reports = Path(settings.report_dir)
    log = reports.parent / "report.log"
    proc = popen(env, *REPORT, log=log)
    wait = random.uniform(3, 15)
    time.sleep(wait)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    text = log.read_text()
    shown = visible(reports)
    records = re.search(r"records (\d+): valid", text)
    figures(
        f"SIGTERM after {wait:.1f} s: exit {code}; visible folders {len(shown)}"
        + (f"; records reported {records.group(1)} of 20000" if records else "")
    )
    assert "Traceback" not in text
    assert all(whole(f) for f in shown)
    if code == 0:  # it finished before the signal: its totals are the topic's
        assert records and int(records.group(1)) == 20_000 and len(shown) == 1
    else:
        assert code == 130 and "sensorstream: stopped by SIGTERM" in text and shown == []
