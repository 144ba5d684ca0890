"""Plot Nexmark throughput per query from the CSV files `cargo bench --bench nexmark`
writes (EDDY_NEXMARK_CSV=...): one bar group per query, one bar per CSV (e.g. the
in-process generator and Kafka), in events per CPU-second of the eddy process.

    python3 benchmarks/nexmark/plot.py out.png generator.csv:"in-process generator" kafka.csv:"Kafka (JSON)"
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path, newline="") as f:
        return {row["query"]: row for row in csv.DictReader(f)}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    series = []
    for arg in sys.argv[2:]:
        path, _, label = arg.partition(":")
        series.append((label or path, load(path)))
    queries = []
    for _, rows in series:
        for q in rows:
            if q not in queries:
                queries.append(q)
    queries.sort(key=lambda q: int(q[1:]))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, len(queries) * 0.7), 4.5))
    for i, (label, rows) in enumerate(series):
        xs = [j + i * width for j in range(len(queries))]
        ys = [float(rows[q]["events_per_cpu_s"]) / 1e6 if q in rows else 0 for q in queries]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(queries))])
    ax.set_xticklabels(queries)
    events = next(iter(series[0][1].values()))["events"]
    ax.set_ylabel("million events per CPU-second")
    ax.set_title(f"eddy Nexmark throughput per core ({int(events):,} events per query)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
