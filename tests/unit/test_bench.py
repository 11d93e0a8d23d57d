"""The benchmark harness's own arithmetic: percentiles and per-event latency from progress rows."""

from datetime import UTC, datetime

from bench import latency
from bench.__main__ import to_markdown


def test_percentiles_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    p = latency.percentiles(values)
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["count"]) == (50.0, 95.0, 99.0, 100.0, 100)
    assert latency.percentiles([]) == {"count": 0}
    assert latency.percentiles([7.0])["p99"] == 7.0


def _row(start_s: float, duration_ms: int, start: dict | None, end: dict):
    ts = datetime.fromtimestamp(start_s, UTC)
    src = {"startOffset": None if start is None else {"t": start}, "endOffset": {"t": end}}
    return ts, duration_ms, [src]


def test_each_record_gets_the_commit_of_the_batch_holding_its_offset():
    rows = [
        _row(100.0, 2_000, None, {"0": 10, "1": 5}),  # first batch: from offset 0, ends 102 s
        _row(103.0, 4_000, {"0": 10, "1": 5}, {"0": 20, "1": 5}),  # ends 107 s
    ]
    index = latency.batch_index(rows)
    records = [
        (0, 0, 99_000),  # batch 1 -> 3 s
        (0, 9, 101_500),  # batch 1 -> 0.5 s
        (0, 10, 102_000),  # batch 2 -> 5 s
        (1, 4, 100_000),  # batch 1 -> 2 s
        (1, 5, 104_000),  # partition 1 has no batch past offset 5 yet
        (2, 0, 104_000),  # unknown partition
    ]
    seconds, missing = latency.latencies(records, index)
    assert seconds == [3.0, 0.5, 5.0, 2.0]
    assert missing == 2


def test_report_flags_a_ratio_of_figures_from_different_runs():
    fig = {"median": 100.0, "min": 90.0, "max": 110.0, "unit": "events/s"}
    results = {
        "date": "d2",
        "machine": "m",
        "scenarios": {
            "raw_ceiling": {**fig, "date": "d1"},
            "pipeline": {**fig, "median": 50.0, "date": "d2"},
        },
    }
    assert "different runs" in to_markdown(results, "img")
    results["scenarios"]["raw_ceiling"]["date"] = "d2"
    md = to_markdown(results, "img")
    assert "**0.50x**" in md and "same run" in md


def test_report_gives_the_pipeline_against_the_spark_floor():
    fig = {"median": 100.0, "min": 90.0, "max": 110.0, "unit": "events/s", "date": "d"}
    results = {
        "date": "d",
        "machine": "m",
        "scenarios": {"spark_floor": {**fig, "median": 400.0}, "pipeline": fig},
    }
    md = to_markdown(results, "img")
    assert "Pipeline / Spark floor: **0.25x**" in md and "same backlog in the same run" in md


def test_the_spark_floor_times_its_busy_batches_only():
    from bench.spark_floor import batch_seconds, contract_schema

    progress = [
        {"timestamp": "2026-12-01T10:00:00.000Z", "numInputRows": 0, "durationMs": {"triggerExecution": 500}},
        {"timestamp": "2026-12-01T10:00:01.000Z", "numInputRows": 7, "durationMs": {"triggerExecution": 2000}},
        {"timestamp": "2026-12-01T10:00:03.500Z", "numInputRows": 3, "durationMs": {"triggerExecution": 1500}},
    ]  # fmt: skip
    assert batch_seconds(progress) == (10, 4.0)
    assert "`price` double" in contract_schema() and "`event_time` timestamp" in contract_schema()


def test_a_partial_run_keeps_the_committed_figures_of_the_other_scenarios():
    """`make bench SCENARIOS=compaction` on a fresh clone (no latest.json): docs/benchmarks.md
    gets the new compaction section and keeps every other section as committed."""
    from bench.__main__ import ROOT, carry_sections

    committed = (ROOT / "docs" / "benchmarks.md").read_text()
    assert carry_sections(committed, committed) == committed
    new = "# Benchmarks\n\nLatest run: today.\n\n## Compaction (today)\n\nnew figures\n"
    merged = carry_sections(new, committed)
    assert merged.startswith("# Benchmarks\n\nLatest run: today.\n\n## ")
    assert "## Compaction (today)\n\nnew figures\n" in merged
    assert "## Compaction (2026" not in merged
    for heading in ("## Throughput", "## Latency (", "## Footprint (", "## DAG parse time ("):
        old = committed[committed.index(heading) :].split("\n## ")[0]
        assert old in merged, heading
    order = [line for line in merged.splitlines() if line.startswith("## ")]
    assert [h.split(" (")[0] for h in order] == [
        h.split(" (")[0] for h in committed.splitlines() if h.startswith("## ")
    ]
    assert carry_sections(new, "") == new


def test_the_driver_ui_is_addressed_by_a_valid_url_host():
    # A JVM reports its IPv4 sockets as IPv4-mapped IPv6: used as is, Jetty answered 400.
    assert latency.url_host("::ffff:127.0.0.1") == "127.0.0.1"
    assert latency.url_host("127.0.0.1") == "127.0.0.1"
    assert latency.url_host("::1") == "[::1]"
    assert latency.url_host("0.0.0.0") == "127.0.0.1"
    assert latency.url_host("::") == "127.0.0.1"


def test_a_new_section_comes_before_the_committed_sections_that_followed_it():
    """A scenario's first section (here Scale-out) lands where this run put it, before the
    closing "What limits" text, and a committed section this run lacks keeps its place."""
    from bench.__main__ import carry_sections

    new = (
        "# Benchmarks\n\nnow\n\n## Throughput\n\nt2\n\n## Scale-out (today)\n\ns\n\n"
        "## What limits each figure\n\nw2\n"
    )
    old = (
        "# Benchmarks\n\nthen\n\n## Throughput\n\nt1\n\n## Latency (then)\n\nl1\n\n"
        "## What limits each figure\n\nw1\n"
    )
    merged = carry_sections(new, old)
    order = [line for line in merged.splitlines() if line.startswith("## ")]
    assert order == [
        "## Throughput",
        "## Latency (then)",
        "## Scale-out (today)",
        "## What limits each figure",
    ]
    assert "t2" in merged and "l1" in merged and "w2" in merged and "t1" not in merged


def test_the_limits_text_is_refreshed_without_the_figures_file(tmp_path, monkeypatch):
    """``bench --report-only`` on a fresh clone (no bench-results/latest.json): the committed
    figures stay, the closing section becomes bench/limits.md's text."""
    import bench.__main__ as bench_main

    limits = tmp_path / "limits.md"
    limits.write_text("## What limits each figure\n\nnew text\n")
    monkeypatch.setattr(bench_main, "LIMITS", limits)
    doc = "# Benchmarks\n\n## Throughput\n\nfigures\n\n## What limits each figure\n\nold text\n"
    refreshed = bench_main.with_limits(doc)
    assert (
        refreshed
        == "# Benchmarks\n\n## Throughput\n\nfigures\n\n## What limits each figure\n\nnew text\n"
    )
    assert bench_main.with_limits(refreshed) == refreshed

    committed = (bench_main.ROOT / "docs" / "benchmarks.md").read_text()
    monkeypatch.setattr(bench_main, "LIMITS", bench_main.ROOT / "bench" / "limits.md")
    assert bench_main.with_limits(committed) == committed  # the committed page is up to date


def test_a_fresh_clone_takes_the_capacity_from_the_committed_page():
    from bench.__main__ import ROOT, committed_pipeline

    row = "| pipeline | 9,739 events/s | [9,604 - 10,116] |  | 2026-12-04 22:50 UTC |"
    assert committed_pipeline(f"# B\n\n## Throughput\n\n{row}\n") == (
        9739.0,
        "pipeline figure of 2026-12-04 22:50 UTC (docs)",
    )
    assert committed_pipeline("no table") is None
    assert committed_pipeline(f"# B\n\n## Scale-out\n\n{row}\n") is None  # not throughput
    assert committed_pipeline((ROOT / "docs" / "benchmarks.md").read_text()) is not None


def test_a_partial_run_on_a_fresh_clone_keeps_the_committed_throughput_rows(tmp_path, monkeypatch):
    """``make bench SCENARIOS="spark_floor pipeline"`` without a latest.json keeps the raw
    ceiling's committed row (and its ratio, flagged as from another run)."""
    import bench.__main__ as bench_main

    page = "\n".join(
        [
            "# Benchmarks",
            "",
            "## Throughput",
            "",
            "| scenario | median | spread | target | measured |",
            "|---|---:|---:|---:|---|",
            "| raw_ceiling | 147,790 events/s | [146,405 - 150,903] |  | 2026-12-04 19:56 UTC |",
            "| spark_floor | 21,162 events/s | [20,606 - 21,664] |  | 2026-12-04 22:50 UTC |",
            "| pipeline | 9,739 events/s | [9,604 - 10,116] |  | 2026-12-04 22:50 UTC |",
            "",
        ]
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text(page)
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    monkeypatch.setattr(bench_main, "RESULTS", tmp_path)  # no latest.json there
    run = {"median": 10_000.0, "min": 9_000.0, "max": 11_000.0, "unit": "events/s"}
    results = {
        "date": "2026-12-05 07:22 UTC",
        "machine": "m",
        "scenarios": {"spark_floor": {**run, "median": 20_000.0}, "pipeline": run},
    }
    merged = bench_main.merge_latest(results)

    assert list(merged["scenarios"]) == ["raw_ceiling", "spark_floor", "pipeline"]
    assert merged["scenarios"]["raw_ceiling"] == {
        "median": 147_790.0,
        "unit": "events/s",
        "min": 146_405.0,
        "max": 150_903.0,
        "date": "2026-12-04 19:56 UTC",
    }
    assert merged["scenarios"]["pipeline"]["date"] == "2026-12-05 07:22 UTC"
    md = bench_main.to_markdown(merged, "img")
    assert "Pipeline / Spark floor: **0.50x**" in md and "same run" in md
    assert "Pipeline / raw ceiling: **0.07x**" in md and "figures from different runs" in md
    # and the page it writes reads back the same figures
    assert bench_main.committed_throughput(md) == merged["scenarios"]
    # its first line says the run was a partial one
    assert md.splitlines()[2] == (
        "Latest run of `make bench` on 2026-12-05 07:22 UTC (of spark_floor, pipeline; every "
        "other figure says when it was measured) — m."
    )
    everything = {**results, "measured": [*bench_main.SCENARIOS, *bench_main.SECTIONS]}
    assert "(of" not in bench_main.to_markdown(everything, "img").splitlines()[2]


def test_report_gives_the_restart_against_a_fresh_start():
    side = {"to_first_batch_s": 14.1, "batch_id": 0, "first_batch_s": 4.2, "add_batch_s": 3.0}
    restart = {
        "trigger": "1 second",
        "rate": 4869.5,
        "loaded_s": 301.0,
        "events": 1_400_000,
        "killed_after_batch": 290,
        "snapshot_every": 300,
        "state": {"changelogs": 580, "changelog_mib": 80.5, "snapshots": 2},
        "fresh": side,
        "restart": {**side, "to_first_batch_s": 27.6, "first_batch_s": 21.4},
        "replay_s": 17.2,
    }
    md = to_markdown(
        {
            "date": "d",
            "machine": {},
            "events": 1,
            "reps": 1,
            "warmup": 0,
            "scenarios": {},
            "restart": restart,
            "restart_date": "2026-12-05 03:00 UTC",
        },
        "img",
    )
    assert "## Restart after a crash (2026-12-05 03:00 UTC)" in md
    assert "| spawn to the end of the first batch | 14.1 s | 27.6 s |" in md
    assert "580 changelogs (80.5 MiB)" in md and "**17.2 s**" in md


def test_report_gives_the_compaction_rate_and_its_phases():
    compaction = {
        "day": "2026-11-20",
        "rows": 484_930,
        "files_before": 1923,
        "files_after": 1,
        "bytes_before": 72_945_886,
        "bytes_after": 27_907_352,
        "file_reduction": 1923.0,
        "scan_before": {"median_s": 3.5},
        "scan_after": {"median_s": 0.04},
        "scan_speedup": 87.5,
        "seconds": 7.0,
        "cores": 2,
        "mb_per_s_per_core": 4.97,
        "phases": {"read": 4.0, "dedupe_check": 1.5, "write": 1.5, "verify": 3.5, "marts": 4.0},
    }
    base = {"date": "d", "machine": {}, "events": 1, "reps": 1, "warmup": 0, "scenarios": {}}
    md = to_markdown({**base, "compaction": compaction, "compaction_date": "x"}, "img")
    section = md.split("## Compaction")[1].split("\n## ")[0]
    assert "484,930 rows in 7.0 s" in section and "**4.97 MB/s per core**" in section
    assert "read 4.0, dedupe_check 1.5, write 1.5, verify 3.5, marts 4.0" in section
    assert "14.5 s in all from the read to the marts" in section  # 4 + 1.5 + 1.5 + 3.5 + 4
    assert "(`compact_events.py`, verified)" in section
    md = to_markdown(
        {**base, "compaction": {**compaction, "engine": "arrow"}, "compaction_date": "x"}, "img"
    )
    assert "(`compact_events.py`, its arrow engine, verified)" in md


def test_the_scale_out_counts_the_task_cpu_of_the_batches_after_the_first(tmp_path):
    import json

    from bench.__main__ import task_cpu_seconds

    def task_end(launched_ms: int, cpu_ns: int) -> str:
        return json.dumps(
            {
                "Event": "SparkListenerTaskEnd",
                "Task Info": {"Launch Time": launched_ms},
                "Task Metrics": {"Executor CPU Time": cpu_ns},
            }
        )

    (tmp_path / "app-1").write_text(
        "\n".join(
            [
                json.dumps({"Event": "SparkListenerJobStart", "Job ID": 0}),
                task_end(1_000, 4_000_000_000),  # the first batch: the JVMs warm up
                task_end(5_000, 1_000_000_000),
                task_end(6_000, 500_000_000),
            ]
        )
    )
    assert task_cpu_seconds(tmp_path) == 5.5
    assert task_cpu_seconds(tmp_path, since_ms=5_000) == 1.5
    assert task_cpu_seconds(tmp_path, since_ms=7_000) == 0
