"""Job specs (include/spark/jobs.py): one declaration read by the app, built by callers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from include import pipeline
from include.spark.jobs import (
    JOBS,
    CompactJob,
    JobSpecError,
    MaintainJob,
    ReconcileJob,
    ReplayJob,
    StreamJob,
    duration_ms,
)

STREAM = {
    "bootstrap_servers": "127.0.0.1:9092",
    "topic": "events",
    "lake_path": "s3a://lake/raw/events",
    "dead_letter_path": "s3a://lake/dead_letter/events",
    "checkpoint_root": "s3a://lake/_checkpoints/stream_events",
}


def test_a_spec_round_trips_through_its_command_line():
    job = StreamJob(**STREAM, mode="bounded", max_offsets_per_trigger=3000, lease_ttl=10.0)
    argv = job.to_argv()
    assert "--mode=bounded" in argv and "--max-offsets-per-trigger=3000" in argv
    assert StreamJob.from_argv(argv) == job


def test_defaults_live_in_the_spec_and_stay_off_the_command_line():
    job = StreamJob(**STREAM)
    assert job.trigger == pipeline.STREAM_TRIGGER
    assert job.dedupe_horizon == pipeline.STREAM_DEDUPE_HORIZON
    assert not any(a.startswith(("--trigger", "--mode", "--accept")) for a in job.to_argv())
    assert StreamJob.from_argv(job.to_argv()) == job


def test_typed_values_are_parsed_and_rendered():
    job = ReconcileJob.parse(
        topic="t",
        lake_path="s3a://b/l",
        dead_letter_path="s3a://b/d",
        since="2026-11-25T00:00Z",
        until="2026-11-26T00:00:00+00:00",
    )
    assert job.since == datetime(2026, 11, 25, tzinfo=UTC)
    assert ReconcileJob.from_argv(job.to_argv()) == job
    compact = CompactJob.parse(day="2026-11-24", lake_path="s3a://b/l", warehouse="s3a://b/w")
    assert compact.day == date(2026, 11, 24)
    assert "--day=2026-11-24" in compact.to_argv()


def test_an_empty_optional_value_means_none_and_booleans_are_true_or_false():
    job = ReplayJob.from_argv(
        [
            "--dead-letter-path=s3a://b/d",
            "--bootstrap-servers=k:9092",
            "--topic=t",
            "--reason-prefix=",
            "--since=",
            "--until=",
            "--dry-run=true",
        ]
    )
    assert (job.since, job.until, job.reason_prefix, job.dry_run) == (None, None, "", True)


@pytest.mark.parametrize(
    ("job", "argv", "named"),
    [
        (ReconcileJob, ["--since=2026-12-01T14:12:00"], "--since='2026-12-01T14:12:00': give a"),
        (ReconcileJob, ["--since=yesterday"], "--since='yesterday': expected an ISO time"),
        (CompactJob, ["--day=2026-13-01"], "--day='2026-13-01': expected a day"),
        (CompactJob, ["--target-file-mb=0"], "--target-file-mb=0.0: must be positive"),
        (CompactJob, ["--namespace=a-b"], "--namespace='a-b': must be a plain identifier"),
        (MaintainJob, ["--orphan-days=0.5"], "--orphan-days=0.5: must be >= 1"),
        (StreamJob, ["--lake-path=raw/events"], "--lake-path='raw/events': expected a URI"),
        (StreamJob, ["--lease-ttl=1"], "--lease-ttl=1.0: must be at least 3 seconds"),
        (StreamJob, ["--max-offsets-per-trigger=lots"], "expected an integer"),
        (StreamJob, ["--mode=sometimes"], "expected one of bounded, continuous"),
        (StreamJob, ["--accept-retention-gap=yes"], "expected true or false"),
    ],
)
def test_a_wrong_value_exits_2_naming_the_option(capsys, job, argv, named):
    good = {
        ReconcileJob: ["--topic=t", "--lake-path=s3a://b/l", "--dead-letter-path=s3a://b/d",
                       "--since=2026-11-25T00:00Z", "--until=2026-11-26T00:00Z"],
        CompactJob: ["--day=2026-11-24", "--lake-path=s3a://b/l", "--warehouse=s3a://b/w"],
        MaintainJob: ["--warehouse=s3a://b/w"],
        StreamJob: [f"--{k.replace('_', '-')}={v}" for k, v in STREAM.items()],
    }[job]  # fmt: skip
    job.from_argv(good)  # the same line without the wrong value is accepted
    with pytest.raises(SystemExit) as exit_:
        job.from_argv([*good, *argv])
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err


def test_a_missing_option_is_named():
    with pytest.raises(JobSpecError, match="--warehouse is required"):
        CompactJob.parse(day="2026-11-24", lake_path="s3a://b/l")


def test_a_spec_built_in_python_is_checked_too():
    with pytest.raises(JobSpecError, match="--since: give a time zone"):
        ReconcileJob(
            topic="t",
            lake_path="l",
            dead_letter_path="d",
            since=datetime(2026, 11, 25),
            until=datetime(2026, 11, 26, tzinfo=UTC),
        )
    with pytest.raises(JobSpecError, match="--max-offsets-per-trigger='3000': expected int"):
        StreamJob(**STREAM, max_offsets_per_trigger="3000")  # type: ignore[arg-type]


def test_templates_for_a_dag_name_only_known_options_and_every_required_one():
    argv = MaintainJob.templated(warehouse="s3a://{{ params.bucket }}/w", retain_last="{{ x }}")
    assert argv == ["--warehouse=s3a://{{ params.bucket }}/w", "--retain-last={{ x }}"]
    with pytest.raises(JobSpecError, match="no option --retain"):
        MaintainJob.templated(warehouse="w", retain="3")
    with pytest.raises(JobSpecError, match="needs --warehouse"):
        MaintainJob.templated(retain_last="3")


def test_every_app_file_has_one_spec_and_its_main_reads_it():
    from include.spark.jobs import SPARK_APPS

    for app, job in JOBS.items():
        source = (SPARK_APPS / app).read_text()
        assert f"{job.__name__}.from_argv(" in source, app
        assert "argparse" not in source, f"{app} parses its command line itself"


def test_the_dedupe_horizon_is_a_duration():
    assert duration_ms(pipeline.STREAM_DEDUPE_HORIZON) == 10 * 60_000
    assert [duration_ms(t) for t in ("1 second", "2 hours", "1 day", "250 ms")] == [
        1_000,
        7_200_000,
        86_400_000,
        250,
    ]
    for bad in ("10", "ten minutes", "0 seconds", "10 fortnights", "-1 minute"):
        with pytest.raises(JobSpecError, match="--dedupe-horizon="):
            StreamJob(**STREAM, dedupe_horizon=bad)


def test_the_sink_log_retention_is_a_duration_of_at_least_a_minute():
    assert duration_ms(StreamJob(**STREAM).sink_log_retention) == 7 * 86_400_000
    assert StreamJob(**STREAM, sink_log_retention="1 minute").sink_log_retention == "1 minute"
    for bad in ("7", "a week", "59 seconds", "0 days"):
        with pytest.raises(JobSpecError, match="--sink-log-retention="):
            StreamJob(**STREAM, sink_log_retention=bad)
