"""The benchmarks keep working: each runs at its smallest size and checks its own results.

No time is asserted here; the figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_engine_benchmark_runs_every_input_mix():
    output = run("engine.py")
    assert "worst mix" in output
    for status in ("available", "away", "busy", "dnd", "offline"):
        assert f" {status} " in output


def test_the_expiry_sweep_benchmark_runs_and_verifies_its_sweep():
    assert "verification: OK" in run("expiry_sweep.py")


def test_the_load_scenario_runs_and_every_final_presence_is_the_engines():
    assert "verification: OK" in run("load.py")
