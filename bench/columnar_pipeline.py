"""PROBE: the pipeline's shape as a columnar core (Arrow batches in Python), per micro-batch.

1. Spark's Kafka source -> ``mapInArrow``: Arrow's JSON reader with the contract's schema (a
   block that fails is split down to its bad lines, which become dead letters), the
   contract's checks as vectorized masks (required fields per type, enums, bounds, lengths,
   event-time bounds at the batch's time), a 128-bit key per valid row (the UUID's bytes),
   the valid rows kept on the executor's local disk (Arrow IPC), the keys returned.
2. The driver decides the first-seen rows against its state (sorted numpy arrays, two
   generations; within the batch the lowest offset wins).
3. A second job over the same partitions: the cached rows minus the rejected ones, the lake's
   Parquet to S3 partitioned by event date and hour, the sales partials returned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession

from bench.spark_floor import batch_seconds
from include.events import contract

ARROW_TYPES = {
    "string": pa.string(),
    "long": pa.int64(),
    "double": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "boolean": pa.bool_(),
}
CACHE = "/tmp/colcache"


def arrow_schema() -> pa.Schema:
    """The contract's fields, timestamps as strings (checked, then cast)."""
    return pa.schema(
        [
            (f.name, pa.string() if f.type == "timestamp" else ARROW_TYPES[f.type])
            for f in contract.FIELDS
        ]
    )


TS_RE = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
CONTROL_RE = "[\\x{00}-\\x{1f}\\x{7f}-\\x{9f}]"


_JSON_TYPES = {
    "string": (str,),
    "long": (int,),
    "double": (int, float),
    "timestamp": (str,),
    "boolean": (bool,),
}
KINDS = tuple((f.name, _JSON_TYPES[f.type]) for f in contract.FIELDS)


def screen(line: bytes) -> bool:
    """Whether Arrow's reader can take the line: one JSON object whose known fields have the
    JSON types of the contract's (the rest of the checks are the vectorized masks')."""
    import orjson

    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    if type(d) is not dict:
        return False
    for name, kinds in KINDS:
        v = d.get(name)
        if v is not None and type(v) not in kinds:
            return False
    return True


def parse_lines(values: pa.Array, opts) -> tuple[list, list[int]]:
    """(row indices, parsed table) of the good lines, and the indices of the bad ones. A block
    Arrow refuses is screened line by line (orjson and the JSON types), the lines that pass
    parsed again at once; a split down to single lines only if that fails too."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    def parse(part: pa.Array) -> pa.Table | None:
        lst = pa.ListArray.from_arrays(pa.array([0, len(part)], pa.int32()), part)
        buf = pc.binary_join(lst, b"\n")[0].as_buffer()
        try:
            t = pj.read_json(pa.BufferReader(buf), parse_options=opts)
        except pa.ArrowInvalid:
            return None
        return t if t.num_rows == len(part) else None

    def go(idx: np.ndarray, out: list, bad: list) -> None:
        t = parse(values.take(pa.array(idx)))
        if t is not None:
            out.append((idx, t))
        elif len(idx) == 1:
            bad.append(int(idx[0]))
        else:
            mid = len(idx) // 2
            go(idx[:mid], out, bad)
            go(idx[mid:], out, bad)

    out: list = []
    bad: list[int] = []
    t = parse(values)
    if t is not None:
        return [(np.arange(len(values)), t)], bad
    ok = np.fromiter((screen(v) for v in values.to_pylist()), bool, len(values))
    bad.extend(np.flatnonzero(~ok).tolist())
    good = np.flatnonzero(ok)
    if len(good):
        go(good, out, bad)
    return out, bad


def checks(t: pa.Table, now_us: int) -> tuple[pa.Array, pa.Table]:
    """True where the row meets the contract (vectorized), and the table with its timestamps
    cast."""
    import pyarrow.compute as pc

    ok = pa.chunked_array([np.ones(t.num_rows, bool)])
    for f in contract.FIELDS:
        if f.type == "timestamp":
            col = t[f.name]
            good = pc.fill_null(pc.match_substring_regex(col, TS_RE), True)
            ok = pc.and_(ok, good)
            fixed = pc.if_else(good, col, pa.scalar(None, pa.string()))
            fixed = pc.replace_substring_regex(pc.utf8_upper(fixed), r"(\.\d{6})\d+", r"\1")
            ts_type = pa.timestamp("us", tz="UTC")
            try:
                cast = pc.cast(fixed, ts_type)
            except pa.ArrowInvalid:  # a date that is not real (2026-02-30): element by element

                def one(x):
                    try:
                        return pc.cast(pa.array([x]), ts_type)[0].as_py()
                    except pa.ArrowInvalid:
                        return None

                cast = pa.array([one(x) for x in fixed.to_pylist()], ts_type)
                ok = pc.and_(ok, pc.or_(pc.is_null(col), pc.is_valid(cast)))
            t = t.set_column(t.schema.get_field_index(f.name), f.name, cast)
        elif f.type == "string":
            ok = pc.and_(
                ok, pc.invert(pc.fill_null(pc.match_substring_regex(t[f.name], CONTROL_RE), False))
            )
    et = t["event_type"]
    ok = pc.and_(
        ok,
        pc.fill_null(
            pc.is_in(et, value_set=pa.array([e.value for e in contract.EventType])), False
        ),
    )
    for f in contract.FIELDS:
        col = t[f.name]
        if f.required_for:
            need = pc.is_in(et, value_set=pa.array([e.value for e in f.required_for]))
            ok = pc.and_(ok, pc.or_(pc.invert(pc.fill_null(need, False)), pc.is_valid(col)))
        if f.enum is not None and f.name != "event_type":
            good = pc.is_in(col, value_set=pa.array([e.value for e in f.enum]))
            ok = pc.and_(ok, pc.or_(pc.is_null(col), good))
        if f.minimum is not None:
            ok = pc.and_(ok, pc.fill_null(pc.greater_equal(col, f.minimum), True))
        if f.maximum is not None:
            ok = pc.and_(ok, pc.fill_null(pc.less_equal(col, f.maximum), True))
        if f.max_length is not None and f.type == "string":
            ln = pc.utf8_length(col)
            ok = pc.and_(
                ok, pc.fill_null(pc.and_(pc.greater(ln, 0), pc.less_equal(ln, f.max_length)), True)
            )
    ts = pc.cast(t["event_time"], pa.int64())
    lo = now_us - contract.MAX_PAST_AGE_DAYS * 86_400_000_000
    hi = now_us + contract.MAX_FUTURE_SKEW_SECONDS * 1_000_000
    ok = pc.and_(ok, pc.fill_null(pc.and_(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)), False))
    for name in (
        "event_id",
        "event_time",
        "ingestion_time",
        "user_id",
        "session_id",
        "schema_version",
    ):
        ok = pc.and_(ok, pc.is_valid(t[name]))
    return ok, t


def stage1(batch_id: int, now_us: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc
        import pyarrow.json as pj
        from pyspark import TaskContext

        opts = pj.ParseOptions(explicit_schema=arrow_schema(), unexpected_field_behavior="ignore")
        pid = TaskContext.get().partitionId()
        valid, coords, dead = [], [], 0
        for b in batches:
            parts, bad = parse_lines(b.column("value"), opts)
            dead += len(bad)
            offsets = b.column("offset")
            kpart = b.column("partition")
            for idx, t in parts:
                ok, t = checks(t, now_us)
                dead += len(ok) - pc.sum(ok).as_py()
                keep = t.filter(ok)
                keep = keep.append_column("kafka_partition", kpart.take(pa.array(idx)).filter(ok))
                keep = keep.append_column("kafka_offset", offsets.take(pa.array(idx)).filter(ok))
                valid.append(keep)
        table = pa.concat_tables(valid) if valid else None
        n = table.num_rows if table is not None else 0
        os.makedirs(f"{CACHE}/{batch_id}", exist_ok=True)
        if n:
            with pa.OSFile(f"{CACHE}/{batch_id}/{pid}.arrow", "wb") as f:
                with pa.ipc.new_file(f, table.schema) as w:
                    w.write_table(table)
            ids = pc.replace_substring(table["event_id"], "-", "")
            hexes = "".join(ids.to_pylist())
            raw = np.frombuffer(bytes.fromhex(hexes), dtype=">u8").astype(np.uint64)
            hi, lo64 = raw[0::2], raw[1::2]
            order = pc.add(
                pc.multiply(pc.cast(table["kafka_partition"], pa.int64()), 1 << 40),
                table["kafka_offset"],
            )
        else:
            hi = lo64 = np.zeros(0, np.uint64)
            order = pa.array([], pa.int64())
        yield from (
            pa.table(
                {
                    "hi": pa.array(hi.view(np.int64)),
                    "lo": pa.array(lo64.view(np.int64)),
                    "ord": order,
                    "pid": pa.array(np.full(n, pid, np.int32)),
                    "row": pa.array(np.arange(n, dtype=np.int32)),
                    "dead": pa.array(np.full(n, 0, np.int64)) if n else pa.array([], pa.int64()),
                }
            )
            .combine_chunks()
            .to_batches()
        )
        if dead:
            yield pa.RecordBatch.from_pydict(
                {"hi": [0], "lo": [0], "ord": [-1], "pid": [pid], "row": [-1], "dead": [dead]},
                schema=pa.schema(
                    [
                        ("hi", pa.int64()),
                        ("lo", pa.int64()),
                        ("ord", pa.int64()),
                        ("pid", pa.int32()),
                        ("row", pa.int32()),
                        ("dead", pa.int64()),
                    ]
                ),
            )

    return run


def stage2(batch_id: int, endpoint: str, lake: str, rejected: dict[int, np.ndarray]):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        from include.endpoints import S3Endpoint

        for b in batches:
            for pid in b.column("id").to_pylist():
                path = f"{CACHE}/{batch_id}/{pid}.arrow"
                if not os.path.exists(path):
                    continue
                with pa.memory_map(path) as src:
                    t = pa.ipc.open_file(src).read_all()
                rej = rejected.get(pid)
                if rej is not None and len(rej):
                    mask = np.ones(t.num_rows, bool)
                    mask[rej] = False
                    t = t.filter(pa.array(mask))
                et = t["event_time"]
                t = t.append_column("event_date", pc.strftime(et, "%Y-%m-%d"))
                t = t.append_column("event_hour", pc.hour(et))
                fs = S3Endpoint.from_aws_env(endpoint).pyarrow_filesystem()
                ds.write_dataset(
                    t,
                    f"{lake}/events",
                    format="parquet",
                    filesystem=fs,
                    partitioning=ds.partitioning(
                        pa.schema([("event_date", pa.string()), ("event_hour", pa.int32())]),
                        flavor="hive",
                    ),
                    basename_template=f"b{batch_id}-p{pid}-{{i}}.parquet",
                    existing_data_behavior="overwrite_or_ignore",
                )
                buys = t.filter(pc.equal(t["event_type"], "purchase"))
                buys = buys.append_column(
                    "rev", pc.multiply(buys["price"], pc.cast(buys["quantity"], pa.float64()))
                )
                agg = buys.group_by(["category", "currency"]).aggregate(
                    [("rev", "sum"), ("quantity", "sum"), ("event_id", "count")]
                )
                yield from (
                    pa.table(
                        {
                            "category": agg["category"],
                            "currency": agg["currency"],
                            "rev": agg["rev_sum"],
                            "n": agg["event_id_count"],
                            "rows": pa.array([t.num_rows] * agg.num_rows, pa.int64()),
                        }
                    )
                    .combine_chunks()
                    .to_batches()
                )
                os.unlink(path)

    return run


class State:
    """Keys seen, as sorted uint64 arrays of two generations (the high half searched, the low
    half compared)."""

    def __init__(self) -> None:
        self.hi = np.zeros(0, np.uint64)
        self.lo = np.zeros(0, np.uint64)

    def decide(self, hi: np.ndarray, lo: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Indices of the rows to reject."""
        idx = np.lexsort((order, lo, hi))
        h, l = hi[idx], lo[idx]
        first = np.ones(len(idx), bool)
        first[1:] = (h[1:] != h[:-1]) | (l[1:] != l[:-1])
        reject = idx[~first]
        cand = idx[first]
        i = np.searchsorted(self.hi, hi[cand])
        i[i == len(self.hi)] = 0
        seen = (
            (self.hi[i] == hi[cand]) & (self.lo[i] == lo[cand])
            if len(self.hi)
            else np.zeros(len(cand), bool)
        )
        reject = np.concatenate([reject, cand[seen]])
        new = cand[~seen]
        nh, nl = hi[new], lo[new]
        o = np.argsort(nh, kind="stable")
        pos = np.searchsorted(self.hi, nh[o])
        self.hi = np.insert(self.hi, pos, nh[o])
        self.lo = np.insert(self.lo, pos, nl[o])
        self.last_new = (nh, nl)
        return reject


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="columnar_pipeline")
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    spark = SparkSession.builder.appName("columnar_pipeline").getOrCreate()
    endpoint = spark.conf.get("spark.hadoop.fs.s3a.endpoint")
    lake = args.path.removeprefix("s3a://")
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .load()
        .select("value", "partition", "offset")
    )
    state = State()
    from include.endpoints import S3Endpoint

    driver_fs = S3Endpoint.from_aws_env(endpoint).pyarrow_filesystem()
    totals = {"valid": 0, "dead": 0, "rejected": 0, "lake": 0, "purchases": 0}
    out_schema = "hi long, lo long, ord long, pid int, row int, dead long"

    def per_batch(df, batch_id: int) -> None:
        t0 = time.time()
        now_us = int(time.time() * 1e6)
        keys = df.mapInArrow(stage1(batch_id, now_us), out_schema).toArrow()
        t1 = time.time()
        live = keys.filter(pa.compute.greater_equal(keys["row"], 0))
        totals["dead"] += int(keys["dead"].to_numpy().sum())
        hi = live["hi"].to_numpy().view(np.uint64)
        lo = live["lo"].to_numpy().view(np.uint64)
        rej = state.decide(hi, lo, live["ord"].to_numpy())
        pids, rows = live["pid"].to_numpy(), live["row"].to_numpy()
        rejected = {int(p): rows[rej][pids[rej] == p] for p in np.unique(pids[rej])}
        # The state's changelog: the batch's new keys, one object per batch id.
        nh, nl = state.last_new
        log = pa.table({"hi": nh.view(np.int64), "lo": nl.view(np.int64)})
        with driver_fs.open_output_stream(f"{lake}/_state/{batch_id}.arrow") as out:
            with pa.ipc.new_file(out, log.schema) as w:
                w.write_table(log)
        t2 = time.time()
        nparts = df.rdd.getNumPartitions()
        parts = spark.range(nparts, numPartitions=nparts)
        sales = parts.mapInArrow(
            stage2(batch_id, endpoint, lake, rejected),
            "category string, currency string, rev double, n long, rows long",
        ).toArrow()
        t3 = time.time()
        totals["valid"] += live.num_rows
        totals["rejected"] += len(rej)
        totals["purchases"] += sum(sales["n"].to_pylist())
        print(
            f"batch {batch_id}: stage1 {t1 - t0:.2f}s decide {t2 - t1:.2f}s stage2 {t3 - t2:.2f}s valid {live.num_rows} rejected {len(rej)}",
            flush=True,
        )

    query = (
        raw.writeStream.foreachBatch(per_batch)
        .option("checkpointLocation", f"{args.path}/_checkpoint")
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    progress = [json.loads(p.json) if hasattr(p, "json") else p for p in query.recentProgress]
    rows, seconds = batch_seconds(progress)
    print("totals", totals, flush=True)
    with open(args.result, "w") as f:
        json.dump({"rows": rows, "seconds": seconds, **totals}, f)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
