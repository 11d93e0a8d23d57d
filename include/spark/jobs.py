"""Every Spark app's command line, declared once.

A job spec is a frozen dataclass: its fields are the app's options (``lake_path`` is
``--lake-path``), their types say how the app parses them, their defaults are the app's
defaults. Three users, one declaration:

* the app reads its command line with ``Spec.from_argv(argv)``: a missing or wrong value exits 2
  with a message that names the option (argparse's ``error``);
* devstack, the benchmarks and the tests build a typed spec and run ``spec.to_argv()`` (the
  spec checks its values when it is built, so a wrong ``SINCE=`` stops before a JVM starts);
  :meth:`JobSpec.parse` turns strings (a shell variable, a CLI value) into one;
* a DAG, whose values are Jinja templates rendered at run time, uses ``Spec.templated(...)``:
  the option names and the required ones are checked when the DAG is parsed, the rendered
  values by the app when it starts.

Options are rendered ``--name=value`` (an empty value or one starting with ``-`` stays one
argument), only when they differ from the default: the default lives here and nowhere else.

Importable without Spark or Airflow (DAG files, the dashboard's tooling and unit tests load it).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from include import connections, pipeline
from include.warehouse import marts as warehouse_marts

SPARK_APPS = Path(__file__).resolve().parent.parent.parent / "spark_apps"


class JobSpecError(ValueError):
    """A job's option has a wrong value; the message names the option (``--since=...: ...``)."""


def option(default: Any = dataclasses.MISSING, *, help: str = "", choices: Sequence[str] = ()):
    """A field of a job spec: a command-line option (required when it has no default)."""
    meta = {"help": help, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def iso_time(value: str) -> datetime:
    """An ISO time with a zone (``2026-11-25T00:00Z``, ``...+01:00``)."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expected an ISO time, e.g. 2026-11-25T00:00Z") from None
    if t.tzinfo is None:
        raise ValueError("give a time zone, e.g. a trailing Z for UTC")
    return t


def _boolean(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError("expected true or false")
    return value == "true"


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("expected a day, YYYY-MM-DD") from None


def _number(kind: type) -> Any:
    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"expected a{'n integer' if kind is int else ' number'}") from None

    return parse


PARSERS: dict[type, Any] = {
    str: str,
    int: _number(int),
    float: _number(float),
    bool: _boolean,
    date: _day,
    datetime: iso_time,
}


def render(value: Any) -> str:
    """A typed value as the app's command line spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def _kind(hint: Any) -> tuple[type, bool]:
    """(the value's type, whether None is allowed) of a field's annotation."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _is_a(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    if kind is date:
        return isinstance(value, date) and not isinstance(value, datetime)
    return isinstance(value, kind)


class JobSpec:
    """Base of the job specs below (each also a frozen dataclass)."""

    APP: ClassVar[str]  # the file in spark_apps/
    # The S3 connection the app runs with, so its S3 user and that user's policy
    # (include/lake/s3.py): the stream's writes raw events, dead letters and checkpoints; the
    # warehouse's reads the lake and writes the warehouse.
    S3_CONN: ClassVar[str] = connections.S3

    @classmethod
    def application(cls) -> str:
        """The app's path, what spark-submit runs."""
        return str(SPARK_APPS / cls.APP)

    @classmethod
    def _options(cls) -> list[tuple[dataclasses.Field, type, bool]]:
        hints = typing.get_type_hints(cls)
        return [(f, *_kind(hints[f.name])) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for f, kind, optional in self._options():
            value = getattr(self, f.name)
            if value is None and optional:
                continue
            if not _is_a(value, kind):
                raise JobSpecError(
                    f"{flag(f.name)}={value!r}: expected {kind.__name__}, "
                    f"got {type(value).__name__}"
                )
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise JobSpecError(
                    f"{flag(f.name)}={value!r}: expected one of {', '.join(choices)}"
                )
        self.check()

    def check(self) -> None:
        """Rules between values (a spec overrides it); raise :class:`JobSpecError`."""

    @classmethod
    def _refuse_unknown(cls, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - {f.name for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise JobSpecError(f"{cls.APP} has no option {', '.join(map(flag, unknown))}")

    # -- strings in ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, **raw: str | None) -> Self:
        """A spec from option values as strings (what a command line or a shell variable
        holds). An empty string is "none" for an optional option. Raises
        :class:`JobSpecError` naming the option."""
        cls._refuse_unknown(raw)
        values: dict[str, Any] = {}
        for f, kind, optional in cls._options():
            text = raw.get(f.name)
            if text is None or (text == "" and optional):
                if f.default is dataclasses.MISSING and not optional:
                    raise JobSpecError(f"{flag(f.name)} is required")
                if text is not None:
                    values[f.name] = None
                continue
            try:
                values[f.name] = PARSERS[kind](text)
            except ValueError as exc:
                raise JobSpecError(f"{flag(f.name)}={text!r}: {exc}") from None
        return cls(**values)

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        name = cls.APP.removesuffix(".py")
        p = argparse.ArgumentParser(prog=name, description=(cls.__doc__ or "").split("\n")[0])
        for f, _, optional in cls._options():
            required = f.default is dataclasses.MISSING and not optional
            default = None if f.default in (dataclasses.MISSING, None) else render(f.default)
            help_ = f.metadata.get("help", "")
            if default is not None:
                help_ = f"{help_} (default: {default})".strip()
            p.add_argument(flag(f.name), dest=f.name, required=required, help=help_)
        return p

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Self:
        """The app's command line read: exits 2 naming the option when a value is wrong."""
        p = cls.parser()
        ns = p.parse_args(list(argv))
        try:
            return cls.parse(**{k: v for k, v in vars(ns).items() if v is not None})
        except JobSpecError as exc:
            p.error(str(exc))
            raise  # unreachable: error() exits

    # -- strings out --------------------------------------------------------------------------

    def to_argv(self) -> list[str]:
        """The app's arguments: every option that differs from its default."""
        out = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            out.append(f"{flag(f.name)}={render(value)}")
        return out

    @classmethod
    def templated(cls, **values: str) -> list[str]:
        """The app's arguments from Jinja templates (a DAG's ``application_args``): names
        checked now, values when the app starts."""
        cls._refuse_unknown(values)
        missing = [
            flag(f.name)
            for f, _, optional in cls._options()
            if f.default is dataclasses.MISSING and not optional and f.name not in values
        ]
        if missing:
            raise JobSpecError(f"{cls.APP} needs {', '.join(missing)}")
        return [f"{flag(name)}={value}" for name, value in values.items()]

    @classmethod
    def default(cls, name: str) -> Any:
        """An option's default (DAG params show the app's own)."""
        f = next(f for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING:
            raise JobSpecError(f"{flag(name)} has no default")
        return f.default

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _uri_or_absolute(spec: JobSpec, *names: str) -> None:
    for name in names:
        value = getattr(spec, name)
        if "://" not in value and not value.startswith("/"):
            raise JobSpecError(
                f"{flag(name)}={value!r}: expected a URI (s3a://...) or an absolute path"
            )


def _identifiers(spec: JobSpec, *names: str) -> None:
    for name in names:
        if not getattr(spec, name).isidentifier():
            raise JobSpecError(f"{flag(name)}={getattr(spec, name)!r}: must be a plain identifier")


# The stream's engines (``--engine``; docs/architecture.md, "The columnar core").
ENGINES = ("auto", "columnar", "rows")

REPORT_HELP = "write the result here as JSON (a path or s3a:// URI; include/reports.py)"


@dataclasses.dataclass(frozen=True)
class StreamJob(JobSpec):
    """The stream: Kafka -> the lake, the dead letters and the live aggregates."""

    APP: ClassVar[str] = "stream_events.py"

    bootstrap_servers: str = option(help="Kafka bootstrap servers")
    topic: str = option(help="the events topic")
    lake_path: str = option(help="s3a://bucket/prefix of the raw events")
    dead_letter_path: str = option(help="s3a://bucket/prefix of the dead letters")
    checkpoint_root: str = option(help="one sub-directory per query")
    mode: str = option(
        "continuous", choices=("bounded", "continuous"), help="bounded drains and exits"
    )
    trigger: str = option(pipeline.STREAM_TRIGGER, help="processing-time trigger (continuous)")
    dedupe_horizon: str = option(
        pipeline.STREAM_DEDUPE_HORIZON,
        help="processing-time horizon within which repeated event_ids are dropped",
    )
    window: str = option(pipeline.STREAM_WINDOW, help="aggregate window length")
    sink_log_retention: str = option(
        pipeline.SINK_LOG_RETENTION,
        help="how long the file sinks' logs keep an entry before it moves to their archive "
        "(readers see both; at least a minute, and a batch must commit within a quarter of it)",
    )
    starting_offsets: str = option("earliest", help="where a new checkpoint starts reading")
    max_offsets_per_trigger: int = option(200_000, help="records per batch at most")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of the aggregates")
    aggregate_modules: str = option(
        "",
        help="comma-separated Python modules that register more live aggregates when imported "
        "(include.analytics.store.register)",
    )
    engine: str = option(
        "auto",
        choices=ENGINES,
        help="how a micro-batch runs: columnar (Arrow batches in Python; a local master only), "
        "rows (Spark's rows, the JVM contract, transformWithState) or auto: the engine a "
        "checkpoint was started with, else columnar where it can run (docs/architecture.md)",
    )
    app_name: str = option("stream_events", help="Spark application name")
    lease_ttl: float = option(60.0, help="seconds the single-writer lease lives unrenewed")
    accept_retention_gap: bool = option(
        False,
        help="operator action: first drain with failOnDataLoss=false, skipping offsets that "
        "retention removed (the launch DAG logged which), then run normally",
    )

    def check(self) -> None:
        if self.lease_ttl < 3:
            raise JobSpecError(f"--lease-ttl={self.lease_ttl}: must be at least 3 seconds")
        if self.max_offsets_per_trigger < 1:
            raise JobSpecError(
                f"--max-offsets-per-trigger={self.max_offsets_per_trigger}: must be positive"
            )
        _uri_or_absolute(self, "lake_path", "dead_letter_path", "checkpoint_root")
        try:
            duration_ms(self.dedupe_horizon)
        except ValueError as exc:
            raise JobSpecError(f"--dedupe-horizon={self.dedupe_horizon!r}: {exc}") from None
        try:
            retention = duration_ms(self.sink_log_retention)
        except ValueError as exc:
            raise JobSpecError(f"--sink-log-retention={self.sink_log_retention!r}: {exc}") from None
        if retention < pipeline.SINK_LOG_MIN_RETENTION_MS:
            raise JobSpecError(
                f"--sink-log-retention={self.sink_log_retention!r}: at least "
                f"{pipeline.SINK_LOG_MIN_RETENTION_MS // 1000} seconds (a batch must commit "
                "within a quarter of it: spark_apps/sink_log.py)"
            )


_UNIT_MS = {
    "millisecond": 1,
    "ms": 1,
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
}


def snapshot_every_batches(trigger: str) -> int:
    """How many micro-batches of ``trigger`` the stream's state is snapshotted after:
    :data:`~include.pipeline.STREAM_STATE_SNAPSHOT_INTERVAL_S` of them, at least Spark's own
    default (10). The stream sets it (``spark_apps/stream_events.py``, ``batch_conf``); the
    restart benchmark kills the stream just before it."""
    every = -(-pipeline.STREAM_STATE_SNAPSHOT_INTERVAL_S * 1000 // duration_ms(trigger))
    return max(10, every)


def duration_ms(text: str) -> int:
    """``"10 minutes"`` -> 600000: a positive whole number and a unit (millisecond(s), ms,
    second(s), minute(s), hour(s), day(s)), as Spark's interval strings write them."""
    parts = text.strip().lower().split()
    unit = parts[1].removesuffix("s") if len(parts) == 2 and parts[1] != "ms" else "ms"
    if len(parts) != 2 or not parts[0].isdigit() or unit not in _UNIT_MS or int(parts[0]) < 1:
        raise ValueError(f"expected a positive duration such as '10 minutes', not {text!r}")
    return int(parts[0]) * _UNIT_MS[unit]


# A JVM size as Spark reads one (``spark.driver.memory``): a number and its unit.
MEMORY_PATTERN = r"^[1-9][0-9]*[kKmMgGtT][bB]?$"


# spark.driver.memory when nothing sets it (the apps' and the operator's out-of-heap messages).
SPARK_DEFAULT_HEAP = "1g, Spark's default"


@dataclasses.dataclass(frozen=True)
class CompactJob(JobSpec):
    """Nightly compaction: one event day of the lake -> the Iceberg warehouse and its marts."""

    APP: ClassVar[str] = "compact_events.py"
    S3_CONN: ClassVar[str] = connections.WAREHOUSE_S3
    # The driver's heap (``spark.driver.memory``; on a local master every task runs in it).
    # Spark's default, 1g, failed on a day of 2,000,000 events (235 MiB of Parquet in 2,070
    # files; the day's cache left the distinct-id count no memory, or the heap ran out); 2g
    # compacted it. The compact_warehouse DAG's ``driver_memory`` param overrides it for a
    # larger day (``make compact MEMORY=...`` on the local stack).
    DRIVER_MEMORY: ClassVar[str] = "3g"

    day: date = option(help="event day, YYYY-MM-DD")
    lake_path: str = option(help="the stream's file sink path (s3a://...)")
    warehouse: str = option(help="Iceberg warehouse location (s3a://...)")
    namespace: str = option(pipeline.WAREHOUSE_NAMESPACE, help="the warehouse's namespace")
    marts_namespace: str = option(pipeline.MARTS_NAMESPACE, help="the marts' namespace")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of the catalog and runs")
    target_file_mb: float = option(float(pipeline.TARGET_FILE_MB), help="target file size")
    bytes_per_row: float = option(
        pipeline.FIRST_BYTES_PER_ROW,
        help="compacted size of a row for a new table (later runs measure the table's files)",
    )
    arrow_max_mb: float = option(
        float(pipeline.COMPACTION_ARROW_MAX_MB),
        help="a day whose raw files hold at most this many MiB is compacted by Arrow in the "
        "driver, a larger one by Spark's executors (0: always Spark)",
    )
    late_days: bool = option(
        True,
        help="then append to every verified day the events of the raw files its partition "
        "got since (late events; found in the sink's log)",
    )
    report: str | None = option(None, help=REPORT_HELP)

    def check(self) -> None:
        for name in ("target_file_mb", "bytes_per_row"):
            if getattr(self, name) <= 0:
                raise JobSpecError(f"{flag(name)}={getattr(self, name)}: must be positive")
        if self.arrow_max_mb < 0:
            raise JobSpecError(f"{flag('arrow_max_mb')}={self.arrow_max_mb}: must be 0 or more")
        _identifiers(self, "namespace", "marts_namespace", "pg_schema")


@dataclasses.dataclass(frozen=True)
class RebuildMartsJob(JobSpec):
    """Rebuild marts from the Iceberg events table, for a range of days or all of them."""

    APP: ClassVar[str] = "rebuild_marts.py"
    S3_CONN: ClassVar[str] = connections.WAREHOUSE_S3

    warehouse: str = option(help="Iceberg warehouse location (s3a://...)")
    namespace: str = option(pipeline.WAREHOUSE_NAMESPACE, help="the warehouse's namespace")
    marts_namespace: str = option(pipeline.MARTS_NAMESPACE, help="the marts' namespace")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of the catalog")
    since: date | None = option(None, help="first day, YYYY-MM-DD (default: the table's first)")
    until: date | None = option(None, help="last day, YYYY-MM-DD (default: the table's last)")
    marts: str = option("", help="comma-separated mart names (default: every mart)")
    report: str | None = option(None, help=REPORT_HELP)

    def check(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise JobSpecError(f"--since={self.since} is after --until={self.until}")
        try:
            warehouse_marts.named(self.marts)
        except ValueError as exc:
            raise JobSpecError(f"--marts={self.marts!r}: {exc}") from None
        _identifiers(self, "namespace", "marts_namespace", "pg_schema")


@dataclasses.dataclass(frozen=True)
class MaintainJob(JobSpec):
    """Weekly Iceberg maintenance: rewrite manifests, expire snapshots, remove orphan files."""

    APP: ClassVar[str] = "maintain_warehouse.py"
    S3_CONN: ClassVar[str] = connections.WAREHOUSE_S3

    warehouse: str = option(help="Iceberg warehouse location (s3a://...)")
    namespace: str = option(pipeline.WAREHOUSE_NAMESPACE, help="the warehouse's namespace")
    marts_namespace: str = option(pipeline.MARTS_NAMESPACE, help="the marts' namespace")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of the catalog")
    snapshot_days: float = option(7.0, help="expire snapshots older than this")
    retain_last: int = option(5, help="keep at least this many snapshots")
    orphan_days: float = option(3.0, help="remove unreferenced files older than this")
    audit_grace_hours: float = option(
        6.0, help="remove compaction runs' audit branches opened longer ago than this"
    )
    report: str | None = option(None, help=REPORT_HELP)

    def check(self) -> None:
        if self.audit_grace_hours < 0:
            raise JobSpecError(f"--audit-grace-hours={self.audit_grace_hours}: must be >= 0")
        if self.snapshot_days < 0:
            raise JobSpecError(f"--snapshot-days={self.snapshot_days}: must be >= 0")
        if self.orphan_days < 1:
            # Iceberg refuses shorter: a file of a write in progress is an orphan until it commits.
            raise JobSpecError(f"--orphan-days={self.orphan_days}: must be >= 1")
        if self.retain_last < 1:
            raise JobSpecError(f"--retain-last={self.retain_last}: must be >= 1")
        _identifiers(self, "namespace", "marts_namespace", "pg_schema")


@dataclasses.dataclass(frozen=True)
class ReconcileJob(JobSpec):
    """Reconcile what producers sent with what the stream wrote: every event accounted for."""

    APP: ClassVar[str] = "reconcile.py"

    topic: str = option(help="the events topic")
    lake_path: str = option(help="the lake's file sink path")
    dead_letter_path: str = option(help="the dead letters' file sink path")
    since: datetime = option(help="ISO time with a zone: runs produced at or after")
    until: datetime = option(help="ISO time with a zone: runs produced before")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of ingest_runs")
    report: str | None = option(None, help=REPORT_HELP)

    def check(self) -> None:
        for name in ("since", "until"):
            if getattr(self, name).tzinfo is None:
                raise JobSpecError(f"{flag(name)}: give a time zone, e.g. a trailing Z for UTC")


@dataclasses.dataclass(frozen=True)
class ReplayJob(JobSpec):
    """Re-inject dead-lettered events into the events topic, each once."""

    APP: ClassVar[str] = "replay_dead_letters.py"

    dead_letter_path: str = option(help="the dead letters' file sink path")
    bootstrap_servers: str = option(help="Kafka bootstrap servers")
    topic: str = option(help="where to re-inject (the events topic)")
    reason_prefix: str = option("", help="only reasons starting with this")
    since: datetime | None = option(None, help="ISO time: dead-lettered at or after")
    until: datetime | None = option(None, help="ISO time: dead-lettered before")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of dlq_replays")
    dry_run: bool = option(False, help="count what would be replayed")
    report: str | None = option(None, help=REPORT_HELP)


@dataclasses.dataclass(frozen=True)
class LakeReportJob(JobSpec):
    """Totals of the lake and the dead letters, read through the sinks' metadata."""

    APP: ClassVar[str] = "lake_report.py"

    lake_path: str = option(help="the lake's file sink path")
    dead_letter_path: str = option(help="the dead letters' file sink path")
    report: str | None = option(None, help=REPORT_HELP)


@dataclasses.dataclass(frozen=True)
class UpgradeJob(JobSpec):
    """Upgrade a stopped first-release stream (four queries) in place, losing nothing.

    A resume plan per output, the sink logs moved into their archives, the old checkpoints
    moved aside (``spark_apps/upgrade.py``; not a Spark app: plain Python)."""

    APP: ClassVar[str] = "upgrade.py"

    topic: str = option(help="the events topic")
    lake_path: str = option(help="the lake's file sink path")
    dead_letter_path: str = option(help="the dead letters' file sink path")
    checkpoint_root: str = option(help="the stream's checkpoint root (the first release's too)")
    s3_endpoint: str = option(help="the S3 server's URL (keys: AWS_*)")
    pg_schema: str = option(pipeline.PG_SCHEMA, help="Postgres schema of the aggregates")

    def check(self) -> None:
        _uri_or_absolute(self, "lake_path", "dead_letter_path", "checkpoint_root")


JOBS: Mapping[str, type[JobSpec]] = {
    j.APP: j
    for j in (
        StreamJob,
        CompactJob,
        RebuildMartsJob,
        MaintainJob,
        ReconcileJob,
        ReplayJob,
        LakeReportJob,
    )
}
