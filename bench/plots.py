"""PNG plots of a benchmark report (matplotlib, headless Agg backend). Each plot is drawn only
when the report holds its figures; returns the files written."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

P99_TARGET_S = 3.0
GENERATOR_TARGET = 200_000


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(report: dict, out: Path) -> Path | None:
    scen = report.get("scenarios") or {}
    names = [n for n in ("generator", "produce", "raw_ceiling", "pipeline") if n in scen]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    medians = [scen[n]["median"] for n in names]
    lows = [scen[n]["median"] - scen[n]["min"] for n in names]
    highs = [scen[n]["max"] - scen[n]["median"] for n in names]
    ax.bar(names, medians, yerr=[lows, highs], capsize=4, color="#4c72b0")
    for i, v in enumerate(medians):
        ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.axhline(GENERATOR_TARGET, ls="--", lw=1, color="grey")
    ax.text(
        len(names) - 0.5, GENERATOR_TARGET, "generator target", ha="right", va="bottom", fontsize=7
    )
    ax.set_ylabel("events/s (median, min-max)")
    ax.set_title("Throughput")
    return _save(fig, out / "throughput.png")


def latency(report: dict, out: Path) -> Path | None:
    lat = report.get("latency")
    if not lat:
        return None
    levels = lat["levels"]
    labels = [f"{lv['share']:.0%}\n{lv['rate']:,.0f}/s" for lv in levels]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, key, title in (
        (axes[0], "produce_to_parquet_s", "produce -> committed Parquet"),
        (axes[1], "produce_to_postgres_s", "produce -> Postgres aggregate"),
    ):
        width = 0.25
        for j, p in enumerate(("p50", "p95", "p99")):
            xs = [i + (j - 1) * width for i in range(len(levels))]
            ax.bar(xs, [lv[key].get(p, 0) for lv in levels], width, label=p)
        ax.set_xticks(range(len(levels)), labels)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("load (share of capacity)")
    axes[1].axhline(P99_TARGET_S, ls="--", lw=1, color="grey", label="p99 target @50 %")
    axes[0].set_ylabel("seconds")
    axes[1].legend(fontsize=8)
    return _save(fig, out / "latency.png")


def compaction(report: dict, out: Path) -> Path | None:
    c = report.get("compaction")
    if not c:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    axes[0].bar(["streamed", "Iceberg"], [c["files_before"], c["files_after"]], color="#55a868")
    axes[0].set_yscale("log")
    axes[0].set_title(f"files of {c['day']} (log)", fontsize=10)
    scans = [c["scan_before"], c["scan_after"]]
    axes[1].bar(
        ["streamed", "Iceberg"],
        [s["median_s"] for s in scans],
        yerr=[
            [s["median_s"] - s["min_s"] for s in scans],
            [s["max_s"] - s["median_s"] for s in scans],
        ],
        capsize=4,
        color="#c44e52",
    )
    axes[1].set_title("scan of the day (s, median)", fontsize=10)
    return _save(fig, out / "compaction.png")


def footprint(report: dict, out: Path) -> Path | None:
    f = report.get("footprint")
    if not f:
        return None
    names = sorted(set(f["idle"]) | set(f["load"]))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], [f["idle"].get(n, 0) for n in names], 0.4, label="idle")
    ax.barh(
        [y - 0.2 for y in ys],
        [f["load"].get(n, 0) for n in names],
        0.4,
        label=f"load ({f['load_share']:.0%})",
    )
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.set_xlabel("RSS MiB (process tree)")
    ax.legend(fontsize=8)
    ax.set_title("Memory per component")
    return _save(fig, out / "footprint.png")


def draw(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    drawn = [f(report, out) for f in (throughput, latency, compaction, footprint)]
    return [p for p in drawn if p is not None]
