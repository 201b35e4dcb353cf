"""The benchmarks keep working: each runs at its smallest size and checks its own results.

No time is asserted here; the figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(script: str, *options: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *options],
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


def test_the_stale_reads_benchmark_runs_both_read_paths_and_verifies_them():
    assert "verification: OK" in run("stale_reads.py")


def test_the_load_scenario_runs_and_every_final_presence_is_the_engines():
    assert "verification: OK" in run("load.py")


def test_the_unit_costs_benchmark_measures_every_unit_and_checks_its_counts():
    output = run("unit_costs.py", "--json")
    assert "verification: OK" in output
    figures = json.loads(output.splitlines()[-1])
    # One round trip per steady heartbeat: the lane's one step.
    assert figures["heartbeat"]["round_trips"] == 1


@pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None, reason="Redis is not installed"
)
def test_the_cluster_scaling_benchmark_measures_a_single_redis_and_clusters_of_one_and_three_masters():
    output = run("cluster_scaling.py", "--json")
    assert "verification: OK" in output
    figures = json.loads(output.splitlines()[-1])["configs"]

    assert list(figures) == ["single", "cluster-1", "cluster-3"]
    assert figures["single"]["ratio"] == 1.0  # the baseline: the clusters are ratios to it
    masters = figures["cluster-3"]["per_master"]
    assert len(masters) == 3 and sum(master["shards"] for master in masters) == 64
    assert all(master["hb_share"] > 0 for master in masters)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the HTTP load generator, wrk, is not installed")
def test_the_heartbeat_benchmark_measures_the_production_servers_direct_and_behind_the_proxy():
    # Ports of its own, away from a full run's defaults.
    options = ["--no-synapse", "--websocket", "--port", "18300", "--ws-port", "18350", "--proxy-port", "18390"]
    proxy = Path("/usr/sbin/nginx").exists()
    output = run("heartbeat_ingest.py", *options, *(["--through-proxy"] if proxy else []))

    # The production servers are deploy/processes.py's, named by their command lines.
    assert "prod = deploy/processes.py: web " in output
    for case in ("(a) steady heartbeat, REST", "(b) state-changing", "(a') steady heartbeat over the websocket"):
        assert case in output
    assert "  prod " in output
    if proxy:
        assert "  prod via nginx " in output


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the HTTP load generator, wrk, is not installed")
def test_the_scaling_benchmark_measures_each_web_process_count_against_one():
    output = run("scaling.py", "--json")
    figures = json.loads(output.splitlines()[-1])

    results = figures["results"]
    assert list(results) == ["1", "2", "4"]
    assert results["1"]["ratio"] == 1.0  # the baseline: every other count is a ratio to it
    assert all(result["requests"] > 0 and result["errors"] == 0 for result in results.values())
    assert "the curve " in output


def test_the_reconnect_storm_runs_and_every_socket_ends_with_every_change():
    # Ports of its own, away from a full run's defaults.
    output = run("fanout.py", "--storm", "--port", "18400", "--ws-port", "18450", "--json")
    figures = json.loads(output.splitlines()[-1])
    assert figures["sockets"] == figures["peers"]
    assert figures["storm_changes"] > 0
    assert (figures["wrong_final"], figures["missing"], figures["failed"]) == (0, 0, 0)
