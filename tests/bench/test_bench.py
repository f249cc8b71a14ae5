"""`make bench` must keep working: its parsing and verdicts in process, and every scenario end to
end at the smoke profile (tiny sizes; its figures are not the documented ones)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.load import LoadResult, median_of, paired_ratios, parse_wrk, percentiles
from bench.report import markdown, targets
from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:1/users/x
  1 threads and 10 connections
  1000 requests in 1.00s, 200.00KB read
{"requests":1000,"duration_us":2000000,"connect":0,"read":1,"write":0,"status":2,"timeout":3,\
"p50_us":1500,"p90_us":2500,"p99_us":9000,"max_us":12000}
"""


def test_wrk_report_is_parsed_into_rates_milliseconds_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT, connections=10)
    assert result.rps == 500.0
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (1.5, 9.0, 12.0)
    assert result.errors == 6


def test_wrk_without_a_report_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", connections=1)


def test_percentiles_name_their_sample_size() -> None:
    stats = percentiles([float(v) for v in range(1, 101)])
    assert stats["n"] == 100
    assert stats["p50_ms"] == 50.5
    assert 99 <= stats["p99_ms"] <= 100
    assert percentiles([]) == {"n": 0}


def test_repeated_runs_report_the_median_round_the_worst_maximum_and_every_error() -> None:
    def run(rps: float, p99_ms: float, max_ms: float, errors: int) -> LoadResult:
        return LoadResult(50, 100, 1.0, rps, 1.0, 2.0, p99_ms, max_ms, errors)

    merged = median_of([run(900, 40.0, 90.0, 0), run(1000, 9.0, 12.0, 1), run(950, 8.0, 11.0, 0)])
    assert (merged.rps, merged.p99_ms) == (950, 9.0)  # one stalled round does not set the p99
    assert merged.max_ms == 90.0  # but its maximum is still shown
    assert (merged.requests, merged.errors) == (300, 1)
    with pytest.raises(ValueError, match="one concurrency"):
        median_of([run(1, 1, 1, 0), LoadResult(10, 1, 1, 1, 1, 1, 1, 1, 0)])


def test_paired_ratios_take_each_round_against_its_own_yardstick_run() -> None:
    def run(rps: float, p99_ms: float) -> LoadResult:
        return LoadResult(50, 100, 1.0, rps, 1.0, 2.0, p99_ms, p99_ms, 0)

    ours = [run(900, 20.0), run(1000, 30.0), run(475, 40.0)]
    theirs = [run(1800, 10.0), run(2000, 10.0), run(500, 10.0)]  # the third round stalled both
    ratios = paired_ratios(ours, theirs)
    assert ratios["rps_ratio_rounds"] == [0.5, 0.5, 0.95]
    assert ratios["rps_ratio"] == 0.5  # the median of the paired rounds, not of the medians
    assert (ratios["p99_ratio"], ratios["p99_ratio_rounds"]) == (3.0, [2.0, 3.0, 4.0])
    assert paired_ratios([run(900, 20.0)], [run(0, 0.0)])["rps_ratio"] is None
    with pytest.raises(ValueError, match="shorter"):
        paired_ratios(ours, theirs[:2])  # a round without its pair is a bug, not a ratio


def test_a_second_auth0_fetch_or_a_connection_over_the_cap_misses_its_target() -> None:
    scenarios: dict[str, Any] = {
        "stampede": {"auth0_user_fetches": 2},
        "budget": {"pgbouncer": {"cap": 16, "peak_server_connections": 17, "errors": 0}},
        "tokens": {"cold_starts": 10, "shared_through_redis": {"token_requests": 1}},
    }
    verdicts = {row["target"]: row["met"] for row in targets(scenarios)}
    assert verdicts == {
        "stampede": False,
        "connection budget": False,
        "token sharing (10 cold starts)": True,
    }


@pytest.mark.integration
def test_every_scenario_runs_and_holds_its_invariants(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is missing: apt-get install wrk (scripts/bootstrap installs it)")
    # The knative scenario's smoke runs on the session's real node instead, beside the chart
    # it measures (tests/cluster/test_chart_on_node.py): a cluster of its own costs minutes.
    local = [name for name in SCENARIOS if name != "knative"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--profile", "smoke", "--only", ",".join(local),
         "--output", str(tmp_path), "--no-docs"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    s = results["scenarios"]
    assert set(s) == {
        "coldstart", "warm", "breakdown", "cache", "stampede", "budget", "auth0-budget",
        "tokens", "telemetry", "container", "endpoints",
    }  # fmt: skip
    box = s["container"]
    assert 10 < box["image_mb"]["app_layer"] < box["image_mb"]["total"]
    assert 0 < box["image_mb"]["app_layer_compressed"] < box["image_mb"]["app_layer"]
    assert set(box["cold_start"]) == {"userapi", "fastapi-hello"}
    assert all(row["min_ms"] > 0 for row in box["cold_start"].values())
    assert 0 < box["rss_mib"]["idle"] <= box["rss_mib"]["under_load"]
    assert s["breakdown"]["cpu_us_per_call"]["direct_route"] > 0
    assert s["breakdown"]["cpu_us_per_call"]["fastapi_route"] > 0
    breakdown = s["breakdown"]["cpu_us_per_call"]
    assert breakdown["direct_route_without_the_process_copy"] > breakdown["direct_route"]
    assert set(s["coldstart"]["servers"]) == {"userapi", "fastapi-hello", "func-python-hello"}
    assert all(run["errors"] == 0 for runs in s["warm"]["runs"].values() for run in runs)
    warm_outcomes = s["warm"]["userapi_cache_outcomes"]
    assert warm_outcomes["hit"] > sum(warm_outcomes.values()) / 2  # it measured the hit path
    # At 50 connections a read is held by the process's copy or shares a batched read: fewer
    # than one each.
    warm = s["warm"]
    runs = zip(warm["runs"]["userapi"], warm["userapi_backing_calls_per_request"], strict=True)
    at_50 = next(calls for run, calls in runs if run["connections"] == 50)
    assert 0 <= at_50["redis_reads"] < 1
    assert 0 <= at_50["database_queries"] < 1
    assert [len(level) for level in warm["rounds"]["userapi"]] == [2, 2]
    assert all(len(ratio["p99_ratio_rounds"]) == 2 for ratio in warm["ratios"])
    assert all(len(ratio["p50_ratio_rounds"]) == 2 for ratio in warm["ratios"])
    others = s["endpoints"]
    for name in ("list-users", "update-user"):
        assert all(run["errors"] == 0 for run in others["runs"][name])
        assert all(run["requests"] > 0 for run in others["runs"][name])
        assert [r["connections"] for r in others["ratios"][name]] == [1, 50]
    assert s["stampede"]["statuses"] == {"200": s["stampede"]["requests"]}
    assert s["stampede"]["auth0_user_fetches"] == 1
    assert s["stampede"]["auth0_token_fetches"] == 0  # the warm processes already share one
    pooled = s["budget"]["pgbouncer"]
    assert 0 < pooled["peak_server_connections"] <= pooled["cap"]
    assert pooled["errors"] == 0
    storm = s["auth0-budget"]
    assert storm["auth0_429s"] == 0
    assert 0 < storm["auth0_max_calls_in_1s"] <= 4  # the budget's rate + burst
    assert set(storm["statuses"]) <= {"200", "503"}
    lists = storm["list_users"]
    assert sum(lists["statuses"].values()) == lists["requests"] > 0
    assert set(lists["statuses"]) <= {"200", "503"}
    assert lists["order"]["overtakes"] == 0  # no search took a token a waiting miss was owed
    assert "p99_ms" in storm["latency_200"]
    assert storm["quota_cost"]["ratio"] > 0
    assert all(cpu > 0 for cpu in storm["quota_cost"]["cpu_us_per_request"].values())
    assert storm["quota_cost"]["script_calls_per_second"]["on"] > 0  # the quota counted in Redis
    assert storm["quota_cost"]["same_server_ratio"] > 0  # the control ran in the same rounds
    inner = storm["quota_cost_in_process"]
    assert inner["slices"] == 10
    assert inner["ratio"] > 0
    assert inner["same_server_ratio"] > 0
    assert all(rps > 0 for rps in inner["rps"].values())
    assert s["tokens"]["shared_through_redis"]["token_requests"] == 1
    assert s["tokens"]["without_redis"]["token_requests"] == s["tokens"]["cold_starts"]
    otel = s["telemetry"]
    assert otel["receiver_errors"] == []
    assert otel["spans_received"] > 0  # the "on" servers really exported
    assert set(otel["cold"]["median_ms"]) == {"off", "on", "on-10%"}
    assert all(run["errors"] == 0 for lv in otel["warm"]["levels"] for run in lv["runs"].values())
    zipf = s["cache"]["zipf"]
    assert zipf["auth0_fetches"] == zipf["distinct_users_requested"]
    assert (tmp_path / "performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| stampede | <= 1 Auth0 fetch | 1 | met |" in markdown(results)


@pytest.mark.integration
def test_compare_runs_another_commit_beside_this_tree_and_the_hello_app(tmp_path: Path) -> None:
    output = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.compare", "HEAD", "--connections", "1", "--rounds", "2",
         "--seconds", "1", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    (level,) = json.loads(output.read_text())["levels"]
    servers = level["servers"]
    assert set(servers) == {"this tree", "HEAD", "fastapi-hello"}
    assert servers["fastapi-hello"]["rps_ratio_rounds"] == [1.0, 1.0]
    for name in ("this tree", "HEAD"):
        assert 0 < servers[name]["rps_ratio"] < 10
        assert len(servers[name]["rps_ratio_rounds"]) == 2
        assert servers[name]["cpu_us_per_request"] > 0
    assert "| 1 | HEAD |" in result.stdout
