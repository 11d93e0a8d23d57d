"""The analytics database's live aggregates (their registry) and the statements our code runs
on its tables. The tables themselves are made by the migrations (``include/analytics/
migrations/``), the aggregates' from their declarations here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from include import pipeline
from include.endpoints import PostgresEndpoint
from include.events.contract import MONEY_SQL_TYPE
from include.events.runs import RunRecord


@dataclass(frozen=True)
class Aggregate:
    """A live aggregate: per event-time window and one dimension, measures that add up across
    micro-batches (``sums``) and distinct counts estimated from a HyperLogLog sketch kept beside
    them (``distinct``: column ``<name>`` is the estimate, ``<name>_sketch`` the sketch).

    ``transform`` names the stream's function for it, ``"module:function"``, called as
    ``function(valid_events, window)`` on each micro-batch's valid, deduplicated events (a
    Spark DataFrame); it yields one partial row per key with exactly ``partial_columns``. A
    name, not the function, so that this module (read by the dashboard, Airflow and the
    tests) never imports Spark. ``arrow_transform`` names the same for the columnar stream
    (``--engine columnar``): ``function(events, window_ms)`` on one task's kept events (a
    pyarrow Table of the lake's columns) -> its partial rows (a pyarrow Table, sketches as
    serialized bytes); the stream refuses to start on that engine with an aggregate without
    one. The table, its DDL, the upsert and the stream's fan-out all
    derive from this one declaration.

    Money is kept per currency: an aggregate with ``money`` columns is keyed by ``currency``
    too, so that amounts of different currencies are never added; readers convert them to a
    reporting currency with the catalog's dated rates (``fx_rates``)."""

    table: str
    dimension: str
    sums: tuple[str, ...]
    transform: str
    distinct: tuple[str, ...] = ()
    money: tuple[str, ...] = ()  # sums held as money (MONEY_SQL_TYPE); the others are bigint
    comment: str = ""
    arrow_transform: str = ""

    def __post_init__(self) -> None:
        names = (self.table, self.dimension, *self.sums, *self.distinct)
        bad = [n for n in names if not n.isidentifier() or n.lower() != n]
        if bad:
            raise ValueError(f"aggregate {self.table!r}: not lower-case SQL identifiers: {bad}")
        if set(self.money) - set(self.sums):
            raise ValueError(f"aggregate {self.table!r}: money columns must be sums: {self.money}")
        for name in filter(None, (self.transform, self.arrow_transform)):
            module, _, function = name.partition(":")
            if not module or not function.isidentifier():
                raise ValueError(
                    f"aggregate {self.table!r}: transform {name!r} is not 'module:function'"
                )

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The key's columns after the window: the dimension, and the currency of money."""
        return (self.dimension, CURRENCY_COLUMN) if self.money else (self.dimension,)

    @property
    def key(self) -> tuple[str, ...]:
        return ("window_start", *self.dimensions)

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's value columns, in order (without sketches and bookkeeping)."""
        return ("window_start", "window_end", *self.dimensions, *self.sums, *self.distinct)

    @property
    def sketches(self) -> tuple[str, ...]:
        return tuple(f"{d}_sketch" for d in self.distinct)

    @property
    def partial_columns(self) -> tuple[str, ...]:
        """What the stream's transform yields per key and batch."""
        return ("window_start", "window_end", *self.dimensions, *self.sums, *self.sketches)

    def ddl(self) -> str:
        """The table, created if missing (sketch columns added to tables made before them; a
        money table made before amounts were kept per currency is adopted: see
        :func:`_currency_adoption`)."""
        columns = [
            "window_start timestamptz NOT NULL",
            "window_end timestamptz NOT NULL",
            *(f"{d} text NOT NULL" for d in self.dimensions),
            *(f"{c} {MONEY_SQL_TYPE if c in self.money else 'bigint'} NOT NULL" for c in self.sums),
            *(f"{d} bigint NOT NULL" for d in self.distinct),
            *(f"{s} bytea" for s in self.sketches),
            "batch_id bigint NOT NULL",
            "updated_at timestamptz NOT NULL DEFAULT now()",
            f"PRIMARY KEY ({', '.join(self.key)})",
        ]
        body = ",\n    ".join(columns)
        added = "".join(
            f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {s} bytea;\n" for s in self.sketches
        )
        if self.money:
            added += _currency_adoption(self.table, self.key)
        return (
            f"-- {self.comment}\nCREATE TABLE IF NOT EXISTS {self.table} (\n    {body}\n);\n{added}"
        )


CURRENCY_COLUMN = "currency"
# The currency of rows summed before amounts were kept per currency: ISO 4217's code for "no
# currency" (such a row may mix currencies; readers leave it unconverted and say so).
MIXED_CURRENCY = "XXX"


def _currency_adoption(table: str, key: Sequence[str]) -> str:
    """Statements that give a money table made before per-currency amounts its ``currency``
    column (existing rows: :data:`MIXED_CURRENCY`) and its per-currency key; nothing when it
    has them. Applied with the other DDL, once at start."""
    return f"""DO $adopt$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = '{table}' AND column_name = '{CURRENCY_COLUMN}') THEN
        ALTER TABLE {table} ADD COLUMN {CURRENCY_COLUMN} text NOT NULL DEFAULT '{MIXED_CURRENCY}';
        ALTER TABLE {table} ALTER COLUMN {CURRENCY_COLUMN} DROP DEFAULT;
        ALTER TABLE {table} DROP CONSTRAINT {table}_pkey;
        ALTER TABLE {table} ADD PRIMARY KEY ({", ".join(key)});
    END IF;
END $adopt$;
"""


# The live aggregates the stream keeps in Postgres (one declaration each).
AGGREGATES: dict[str, Aggregate] = {
    a.table: a
    for a in (
        Aggregate(
            "category_sales_minute",
            dimension="category",
            sums=("purchases", "units", "revenue"),
            transform="spark_apps.transforms.events:category_sales",
            arrow_transform="spark_apps.columnar.aggregates:category_sales",
            distinct=("buyers",),
            money=("revenue",),
            comment="Relevant purchases per minute and category.",
        ),
        Aggregate(
            "funnel_minute",
            dimension="event_type",
            sums=("events",),
            transform="spark_apps.transforms.events:funnel_counts",
            arrow_transform="spark_apps.columnar.aggregates:funnel_counts",
            distinct=("sessions",),
            comment="Relevant events per minute and event type (the funnel).",
        ),
    )
}


def register(aggregate: Aggregate) -> Aggregate:
    """Add a live aggregate to the registry (a module named by the stream's
    ``--aggregate-modules`` calls this when imported). Its table is created when the stream
    starts; a second declaration of a table already registered is refused."""
    known = AGGREGATES.get(aggregate.table)
    if known is not None and known != aggregate:
        raise ValueError(f"aggregate {aggregate.table!r} is already registered differently")
    AGGREGATES[aggregate.table] = aggregate
    return aggregate


def load_aggregate_modules(modules: str | Iterable[str]) -> list[str]:
    """Import each module named (they register their aggregates); the tables they added.
    ``modules``: names, or the setting as written (``--aggregate-modules``, the DAG param:
    comma-separated)."""
    import importlib

    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(",") if m.strip()]
    before = set(AGGREGATES)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"--aggregate-modules: {module!r} cannot be imported: {exc}") from exc
    return sorted(set(AGGREGATES) - before)


# The sketches' size (log2 of HyperLogLog buckets): ~1.6 % standard error, ~2.5 KB a sketch.
SKETCH_LG_K = 12


def connect(
    endpoint: PostgresEndpoint, schema: str = "public", statement_timeout_s: float | None = None
):
    """A psycopg2 connection to ``endpoint`` (``include/endpoints.py``; a Spark app's is
    ``PostgresEndpoint.from_libpq_env()``) whose tables live in ``schema``: tests use their own
    schema so they never touch the demo's tables. The
    migrations make the schema (``include/analytics/migrations``).

    Never hangs for ever on a dead peer: a 10 s connect timeout and TCP keepalives (a silent
    network drops the connection within ~25 s); ``statement_timeout_s`` bounds each statement
    too (supervision's connections: a renewal that waits on a lock fails instead of freezing
    the lease keeper)."""
    import psycopg2

    if not schema.isidentifier():
        raise ValueError(f"Postgres schema {schema!r} is not a plain identifier")
    options = f"-c search_path={schema}"
    if statement_timeout_s is not None:
        options += f" -c statement_timeout={max(1, int(statement_timeout_s * 1000))}"
    conn = psycopg2.connect(
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        options=options,
        **endpoint.psycopg2_kwargs(),
    )
    return conn


def record_run(conn, record: RunRecord) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO ingest_runs (run_id, topic, events, valid, by_kind, by_partition,
                                        purchases, units, revenue, late, id_digest,
                                        offset_ranges, revenue_by_currency, seconds)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (run_id) DO NOTHING""",
            (
                record.run_id,
                record.topic,
                record.events,
                record.valid,
                json.dumps(record.by_kind),
                json.dumps(record.by_partition),
                record.purchases,
                record.units,
                record.revenue,
                record.late,
                record.id_digest,
                json.dumps(record.offset_ranges),
                json.dumps(record.revenue_by_currency),
                record.seconds,
            ),
        )
    conn.commit()


def publish_catalog(conn, catalog, rates: Iterable | None = None) -> int:
    """Write the catalog's products and the dated exchange rates (``rates``, default: the
    catalog module's recent ones) in one transaction, idempotently (keyed by product id, and by
    pair and day); the number of products."""
    from psycopg2.extras import execute_values

    from include.events.catalog import recent_rates

    rows = [
        (p.product_id, p.category, p.price, p.currency, rank)
        for rank, p in enumerate(catalog.products, start=1)
    ]
    with conn.cursor() as cur:
        execute_values(
            cur,
            """INSERT INTO products (product_id, category, price, currency, popularity_rank)
               VALUES %s ON CONFLICT (product_id) DO UPDATE SET category = EXCLUDED.category,
               price = EXCLUDED.price, currency = EXCLUDED.currency,
               popularity_rank = EXCLUDED.popularity_rank""",
            rows,
        )
    # The demo's series fills the days that have no rate yet: rates a deployment loaded
    # (include/analytics/rates.py) are never overwritten by a producer run.
    upsert_rates(conn, recent_rates() if rates is None else rates, replace=False)
    conn.commit()
    return len(rows)


def upsert_rates(conn, rates: Iterable, *, replace: bool = True) -> None:
    """Write dated rates (``include.events.catalog.Rate``) into ``fx_rates``, keyed by pair
    and day, in the caller's transaction: ``replace`` a day's rate already there (an
    unchanged one is not rewritten), or keep it."""
    from psycopg2.extras import execute_values

    on_conflict = (
        "DO UPDATE SET rate = EXCLUDED.rate WHERE fx_rates.rate IS DISTINCT FROM EXCLUDED.rate"
        if replace
        else "DO NOTHING"
    )
    with conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO fx_rates (rate_date, currency, quote, rate) VALUES %s "
            f"ON CONFLICT (quote, currency, rate_date) {on_conflict}",
            [(r.day, r.currency, r.quote, r.rate) for r in rates],
            page_size=1000,
        )


PROGRESS_COLUMNS = (
    "query_id",
    "run_id",
    "query_name",
    "batch_id",
    "ts",
    "input_rows",
    "input_rows_per_s",
    "processed_rows_per_s",
    "batch_duration_ms",
    "watermark",
    "late_rows_dropped",
    "state_rows",
    "sources",
    "observed",
    "durations",
)


def record_idle(conn, query_name: str, run_id: str) -> None:
    """A query reported itself idle now (the database's clock)."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO stream_idle (query_name, run_id, reported_at) VALUES (%s, %s, now()) "
            "ON CONFLICT (query_name) DO UPDATE SET run_id = EXCLUDED.run_id, "
            "reported_at = EXCLUDED.reported_at",
            (query_name, run_id),
        )
    conn.commit()


def last_signs_of_life(conn) -> dict[str, datetime]:
    """Per query, the newest of its last batch's end and its last idle report (any age)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT query_name, max(at) FROM (
                (SELECT DISTINCT ON (query_name) query_name,
                        ts + batch_duration_ms * interval '1 millisecond' AS at
                 FROM stream_progress ORDER BY query_name, ts DESC)
                UNION ALL
                SELECT query_name, reported_at FROM stream_idle
            ) signs GROUP BY query_name
            """
        )
        rows = cur.fetchall()
    conn.commit()
    return {name: at for name, at in rows if at is not None}


def last_progress_at(conn) -> datetime | None:
    """When the newest batch that read input started (any query): the stream's last step
    forward. Failures of driver runs that started before it are not a crash loop."""
    with conn.cursor() as cur:
        cur.execute(  # newest first along the (query_name, ts) index
            "SELECT max(ts) FROM unnest(%s::text[]) AS q(name), LATERAL ("
            " SELECT ts FROM stream_progress WHERE query_name = q.name AND input_rows > 0"
            " ORDER BY ts DESC LIMIT 1) last",
            (list(pipeline.STREAM_QUERIES),),
        )
        (at,) = cur.fetchone()
    conn.commit()
    return at


def source_end_offsets(sources: Any, topic: str) -> dict[int, int]:
    """Where one batch ended on each partition of ``topic``: the reader of
    ``stream_progress.sources`` (written by ``spark_apps/progress.progress_row``; Spark
    reports a source's ``endOffset`` as an object or as its JSON text)."""
    if isinstance(sources, str):
        sources = json.loads(sources)
    ends: dict[int, int] = {}
    for src in sources or []:
        end = src.get("endOffset") or {}
        if isinstance(end, str):
            end = json.loads(end)
        ends.update({int(p): int(o) for p, o in (end.get(topic) or {}).items()})
    return ends


def latest_end_offsets(conn, topic: str) -> dict[str, dict[int, int]]:
    """Per query: where its newest recorded batch ended on each partition of ``topic``."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT ON (query_name) query_name, sources FROM stream_progress "
            "ORDER BY query_name, ts DESC, batch_id DESC"
        )
        rows = cur.fetchall()
    conn.commit()
    return {name: source_end_offsets(sources, topic) for name, sources in rows}


def record_progress(conn, row: Mapping[str, Any]) -> None:
    """Insert one progress row (a re-reported batch overwrites its row)."""
    cols = ", ".join(PROGRESS_COLUMNS)
    marks = ", ".join(["%s"] * len(PROGRESS_COLUMNS))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in PROGRESS_COLUMNS[4:])
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO stream_progress ({cols}) VALUES ({marks}) "
            f"ON CONFLICT (run_id, query_name, batch_id) DO UPDATE SET {updates}",
            [row[c] for c in PROGRESS_COLUMNS],
        )
    conn.commit()


@dataclass
class UpsertResult:
    upserted: int = 0
    # Rows Postgres refused, each with the first line of its error (the safety net).
    rejected: list[tuple[tuple, str]] = field(default_factory=list)


def _refusal(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def upsert_aggregates(
    conn, table: str, rows: Iterable[tuple], batch_id: int, *, commit: bool = True
) -> UpsertResult:
    """Upsert full rows shaped like ``AGGREGATES[table].columns`` (plus, optionally, one value
    per sketch column) keyed by window and dimension, in one transaction.

    When Postgres refuses the rows for their data (a value the column cannot hold, a NUL in a
    string, a NOT NULL breach), the rows are written one by one, each in a savepoint, and the
    ones it refuses are returned in ``rejected`` instead of failing the batch: no single row can
    stop the stream. Connection and other errors still raise (the batch is retried)."""
    import psycopg2
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    agg = AGGREGATES[table]
    values = [(*row, batch_id) for row in rows]
    if not values:
        if commit:
            conn.commit()
        return UpsertResult()
    width = len(values[0]) - 1
    names = [*(agg.columns + agg.sketches)[:width], "batch_id"]
    statement = sql.SQL(
        "INSERT INTO {table} ({cols}, updated_at) VALUES %s ON CONFLICT ({key}) DO UPDATE SET "
        "{updates}, updated_at = now()"
    ).format(
        table=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, names)),
        key=sql.SQL(", ").join(map(sql.Identifier, agg.key)),
        updates=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in names
            if c not in agg.key
        ),
    )
    template = "(" + ", ".join(["%s"] * len(names)) + ", now())"
    refused = (psycopg2.DataError, psycopg2.IntegrityError, ValueError)
    result = UpsertResult()
    with conn.cursor() as cur:
        text = statement.as_string(cur)
        cur.execute("SAVEPOINT rows")
        try:
            execute_values(cur, text, values, template=template)
        except refused:
            cur.execute("ROLLBACK TO SAVEPOINT rows")
        else:
            cur.execute("RELEASE SAVEPOINT rows")
            if commit:
                conn.commit()
            return UpsertResult(len(values))
        for value in values:
            cur.execute("SAVEPOINT row")
            try:
                execute_values(cur, text, [value], template=template)
            except refused as exc:
                cur.execute("ROLLBACK TO SAVEPOINT row")
                result.rejected.append((value[:-1], _refusal(exc)))
            else:
                cur.execute("RELEASE SAVEPOINT row")
                result.upserted += 1
    if commit:
        conn.commit()
    return result


def add_batch(
    conn,
    table: str,
    partials: Sequence[Mapping[str, Any]],
    batch_id: int,
    sink: str,
    before_commit: Callable[[UpsertResult], None] | None = None,
    fence: Callable[[Any], None] | None = None,
) -> UpsertResult | None:
    """Add one micro-batch's partial aggregates (rows of ``AGGREGATES[table].partial_columns``)
    to the table, exactly once per ``sink`` (the stream's checkpoint and the table) and batch.

    In one transaction: the sink's last applied batch is read and locked; a batch at or below
    it is a replay and is skipped (returns None); otherwise the rows of the keys the batch
    touches are read and locked, sums are added, sketches merged (Apache DataSketches, the
    format of Spark's ``hll_sketch_agg``), and the merged rows upserted through
    :func:`upsert_aggregates` (its safety net included); the batch id is recorded last.
    ``before_commit`` sees the result before the transaction commits (the stream keeps the
    refused rows there first: if that fails, nothing is committed and the batch is retried).
    ``fence(cursor)`` runs first in the transaction and raises if this writer may no longer
    write (the stream's single-writer lease)."""
    agg = AGGREGATES[table]
    with conn.cursor() as cur:
        if fence is not None:
            try:
                fence(cur)
            except Exception:
                conn.rollback()
                raise
        cur.execute(
            "INSERT INTO stream_sink_commits (sink, batch_id) VALUES (%s, -1) "
            "ON CONFLICT (sink) DO NOTHING",
            (sink,),
        )
        cur.execute("SELECT batch_id FROM stream_sink_commits WHERE sink = %s FOR UPDATE", (sink,))
        (applied,) = cur.fetchone()
        if batch_id <= applied:
            conn.rollback()
            return None
        existing = _current_rows(cur, agg, [_key(agg, p) for p in partials])
        merged = [merge_partial(agg, existing.get(_key(agg, p)), p) for p in partials]
    result = upsert_aggregates(conn, table, merged, batch_id, commit=False)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE stream_sink_commits SET batch_id = %s, committed_at = now() WHERE sink = %s",
            (batch_id, sink),
        )
    if before_commit is not None:
        before_commit(result)
    conn.commit()
    return result


def _current_rows(cur, agg: Aggregate, keys: Sequence[tuple]) -> dict[tuple, dict[str, Any]]:
    """The stored rows of ``keys`` (locked until the transaction ends)."""
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    if not keys:
        return {}
    names = [*agg.columns, *agg.sketches]
    statement = sql.SQL(
        "SELECT {cols} FROM {table} t JOIN (VALUES %s) AS k ({key}) USING ({key}) FOR UPDATE OF t"
    ).format(
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in names),
        table=sql.Identifier(agg.table),
        key=sql.SQL(", ").join(map(sql.Identifier, agg.key)),
    )
    template = "(%s::timestamptz" + ", %s::text" * len(agg.dimensions) + ")"
    rows = execute_values(cur, statement.as_string(cur), keys, template=template, fetch=True)
    found = {}
    for row in rows:
        record = dict(zip(names, row, strict=True))
        found[_key(agg, record)] = record
    return found


def _utc(ts: datetime) -> datetime:
    """An aware UTC datetime; a naive one is local time (Spark's ``collect`` converts its UTC
    instants to naive local datetimes; Postgres returns aware ones)."""
    return ts.astimezone(UTC)


def _key(agg: Aggregate, row: Mapping[str, Any]) -> tuple:
    return (_utc(row["window_start"]), *(row[k] for k in agg.key[1:]))


def combine_partials(agg: Aggregate, partials: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Partial rows of one batch from several tasks, one per key: sums added, sketches merged
    (the columnar stream's tasks each yield their own)."""
    from datasketches import hll_sketch, hll_union, tgt_hll_type

    out: dict[tuple, dict[str, Any]] = {}
    unions: dict[tuple, list] = {}
    for p in partials:
        key = _key(agg, p)
        row = out.get(key)
        if row is None:
            out[key] = row = {c: p[c] for c in agg.partial_columns if c not in agg.sketches}
            unions[key] = [hll_union(SKETCH_LG_K) for _ in agg.sketches]
        else:
            for c in agg.sums:
                row[c] = (row[c] or 0) + (p[c] or 0)
        for union, column in zip(unions[key], agg.sketches, strict=True):
            if p.get(column) is not None:
                union.update(hll_sketch.deserialize(bytes(p[column])))
    for key, row in out.items():
        for union, column in zip(unions[key], agg.sketches, strict=True):
            row[column] = union.get_result(tgt_hll_type.HLL_4).serialize_compact()
    return list(out.values())


def merge_partial(
    agg: Aggregate, current: Mapping[str, Any] | None, partial: Mapping[str, Any]
) -> tuple:
    """The row after adding ``partial`` to ``current`` (None: a new key): sums added, sketches
    merged and their estimates recomputed. Values in ``AGGREGATES[...].columns`` order, then
    the sketches."""
    from datasketches import hll_sketch, hll_union, tgt_hll_type

    sums = [
        (partial[c] or 0) + ((current or {}).get(c) or 0) for c in agg.sums
    ]  # Decimal + Decimal for money, int + int for counts
    estimates, sketches = [], []
    for name, column in zip(agg.distinct, agg.sketches, strict=True):
        union = hll_union(SKETCH_LG_K)
        if partial.get(column) is not None:
            union.update(hll_sketch.deserialize(bytes(partial[column])))
        stored = (current or {}).get(column)
        if stored is not None:
            union.update(hll_sketch.deserialize(bytes(stored)))
        merged = union.get_result(tgt_hll_type.HLL_4)
        estimate = round(merged.get_estimate())
        if current is not None and stored is None:  # a row written before sketches were kept
            estimate += int(current.get(name) or 0)
        estimates.append(estimate)
        sketches.append(merged.serialize_compact())
    return (
        _utc(partial["window_start"]),
        _utc(partial["window_end"]),
        *(partial[d] for d in agg.dimensions),
        *sums,
        *estimates,
        *sketches,
    )


def produced_totals(conn, topic: str) -> dict[str, Any]:
    """What was produced to ``topic`` over all recorded runs; ``revenue``: per currency (runs
    recorded before revenue was kept per currency count under ``MIXED_CURRENCY``)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*), coalesce(sum(events), 0), coalesce(sum(valid), 0),
                      coalesce(sum(purchases), 0), coalesce(sum(units), 0),
                      coalesce(sum(events - valid - coalesce((by_kind->>'duplicate')::bigint, 0)), 0)
               FROM ingest_runs WHERE topic = %s""",
            (topic,),
        )
        runs, events, valid, purchases, units, invalid = cur.fetchone()
        cur.execute(
            """SELECT currency, sum(amount) FROM (
                   SELECT e.key AS currency, e.value::numeric AS amount
                   FROM ingest_runs, jsonb_each_text(revenue_by_currency) e WHERE topic = %s
                   UNION ALL
                   SELECT %s, revenue FROM ingest_runs
                   WHERE topic = %s AND revenue_by_currency = '{}' AND revenue <> 0
               ) t GROUP BY currency ORDER BY currency""",
            (topic, MIXED_CURRENCY, topic),
        )
        revenue = {c: float(v) for c, v in cur.fetchall()}
    return {
        "runs": runs,
        "events": int(events),
        "valid": int(valid),
        "invalid": int(invalid),
        "purchases": int(purchases),
        "units": int(units),
        "revenue": revenue,
    }


def aggregate_totals(conn) -> dict[str, Any]:
    """The live sales aggregate's totals; ``revenue``: per currency."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*), coalesce(sum(purchases), 0), coalesce(sum(units), 0),
                      count(DISTINCT category)
               FROM category_sales_minute"""
        )
        rows, purchases, units, categories = cur.fetchone()
        cur.execute(
            "SELECT currency, sum(revenue) FROM category_sales_minute "
            "GROUP BY currency ORDER BY currency"
        )
        revenue = {c: float(v) for c, v in cur.fetchall()}
    return {
        "rows": rows,
        "purchases": int(purchases),
        "units": int(units),
        "revenue": revenue,
        "categories": categories,
    }
