"""Command line of the event generator: ``python -m include.events --count 100000``.

Kafka: ``--bootstrap-servers`` (default ``$RTAP_KAFKA_BOOTSTRAP`` or 127.0.0.1:9092). With
``--record``, the run is recorded in Postgres through libpq's ``PG*`` environment variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

from include import pipeline
from include.endpoints import PostgresEndpoint
from include.events.generator import BAD_KINDS, GeneratorConfig
from include.events.traffic import send_traffic


def share(value: str) -> float:
    f = float(value)
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a share in [0, 1)")
    return f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m include.events", description=__doc__.splitlines()[0]
    )
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--count", type=int, help="events to send")
    amount.add_argument("--duration", type=float, help="seconds to send for")
    p.add_argument(
        "--rate", type=float, default=None, help="events/s (default: as fast as possible)"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--topic", default=pipeline.EVENTS_TOPIC)
    p.add_argument(
        "--bootstrap-servers", default=os.environ.get("RTAP_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help="event-time origin (ISO-8601); default 5 minutes ago",
    )
    p.add_argument("--span", type=float, default=300.0, help="seconds over which sessions start")
    p.add_argument("--rhythm", action="store_true", help="daily traffic curve over the span")
    p.add_argument("--live", action="store_true", help="event time = wall clock")
    p.add_argument("--bad-share", type=share, default=0.0)
    p.add_argument(
        "--bad-kinds", default=",".join(BAD_KINDS), help=f"subset of {','.join(BAD_KINDS)}"
    )
    p.add_argument("--irrelevant-share", type=share, default=0.0)
    p.add_argument("--duplicate-share", type=share, default=0.0)
    p.add_argument("--late-share", type=share, default=0.0)
    p.add_argument("--out-of-order-share", type=share, default=0.0)
    p.add_argument("--record", action="store_true", help="record the run in Postgres (PG* env)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    start = args.start.astimezone(UTC) if args.start else None
    try:
        cfg = GeneratorConfig(
            seed=args.seed,
            users=args.users,
            start=start,
            span_seconds=args.span,
            rhythm=args.rhythm,
            live=args.live,
            bad_share=args.bad_share,
            bad_kinds=tuple(k for k in args.bad_kinds.split(",") if k),
            irrelevant_share=args.irrelevant_share,
            duplicate_share=args.duplicate_share,
            late_share=args.late_share,
            out_of_order_share=args.out_of_order_share,
        )
        cfg.validate()
    except ValueError as exc:
        p.error(str(exc))
    pg_connect = None
    if args.record:
        from include.analytics import store

        pg_connect = lambda: store.connect(PostgresEndpoint.from_libpq_env())  # noqa: E731
    record = send_traffic(
        topic=args.topic,
        kafka_config={"bootstrap.servers": args.bootstrap_servers},
        generator=cfg,
        count=args.count,
        duration=args.duration,
        rate=args.rate,
        pg_connect=pg_connect,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    summary = {
        "run_id": record.run_id,
        "topic": record.topic,
        "events": record.events,
        "rate_per_s": round(record.rate),
        "by_kind": record.by_kind,
        "by_partition": record.by_partition,
        "purchases": record.purchases,
        "revenue_by_currency": record.revenue_by_currency,
        "late": record.late,
        "id_digest": record.id_digest,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
