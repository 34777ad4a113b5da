"""Runs every benchmark and writes benchmarks/results/REPORT.md and spawn-latency.png (see
benchmarks/report)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks import (  # noqa: E402 (after the path set-up)
    allocator_trace,
    form_render,
    reconcile,
    spawn_burst,
    status_endpoint,
)


def plot(bursts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [b["n"] for b in bursts]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in spawn_burst.KINDS:
        ax.plot(
            ns,
            [b["best"][kind]["all_ready_s"] for b in bursts],
            marker="o",
            label=spawn_burst.LABELS[kind],
            linestyle=":" if kind == "raw_server" else "-",
        )
    ax.set_xlabel("concurrent spawns (N)")
    ax.set_ylabel("time until all answer (s)")
    ax.set_title("Burst spawn latency (2 cores)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--weeks", type=int, default=15)
    args = parser.parse_args(argv)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    bursts = [spawn_burst.run(n, args.rounds) for n in args.ns]
    form = form_render.main([])
    status = status_endpoint.main([])
    rec = reconcile.run()
    trace = allocator_trace.main(["--weeks", str(args.weeks)])
    plot(bursts, os.path.join(out, "spawn-latency.png"))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(
            {"bursts": bursts, "form": form, "status": status, "reconcile": rec, "trace": trace},
            f,
            indent=1,
        )

    lines = [
        f"# Benchmark report ({datetime.date.today()}, {os.cpu_count()} cores)",
        "",
        "| benchmark | figure | target | met? |",
        "|---|---|---|---|",
    ]
    for b in bursts:
        for how, figures in (
            ("best", {k: v["all_ready_s"] for k, v in b["best"].items()}),
            ("median", b["median_of_rounds"]),
        ):
            g, s, r, f = (figures[k] for k in spawn_burst.KINDS)
            lines.append(
                f"| burst N={b['n']}: all ready, {how} of {b['rounds']} rounds | GPUDockerSpawner "
                f"{g:.2f} s, "
                f"stock {s:.2f} s, raw singleuser {r:.2f} s ({g / s:.2f}× stock, {g / r:.2f}× "
                f"raw); "
                f"raw `jupyter server` {f:.2f} s | < 1× stock, ≤ 1.15× raw | "
                f"{'yes' if g < s else 'no'} / {'yes' if g <= 1.15 * r else 'no'} |"
            )
    lines.append(
        f"| form render, 30 courses, 16 GPUs | median {form['form']['median_ms']:.2f} ms "
        f"(page {form['page']['median_ms']:.1f} ms) | ≤ 20 ms | "
        f"{'yes' if form['form']['median_ms'] <= 20 else 'no'} |"
    )
    o, t = status["ours"], status["resource_usage"]
    lines.append(
        f"| status endpoint (cache off) | p50 {o['p50_ms']:.2f} ms, p95 {o['p95_ms']:.2f} ms, "
        f"{o['cpu_ms_per_call']:.2f} ms CPU/call; resource-usage p50 {t['p50_ms']:.2f} ms, "
        f"{t['cpu_ms_per_call']:.2f} ms CPU/call | p50 ≤ 5 ms, CPU ≤ resource-usage | "
        f"{'yes' if o['p50_ms'] <= 5 else 'no'} / "
        f"{'yes' if o['cpu_ms_per_call'] <= t['cpu_ms_per_call'] else 'no'} |"
    )
    lines.append(
        f"| hub restart reconcile, {rec['containers']} containers | median "
        f"{rec['median_s'] * 1000:.0f} ms "
        f"| ≤ 2 s | {'yes' if rec['median_s'] <= 2 else 'no'} |"
    )
    for r in trace:
        lines.append(
            f"| allocator, semester trace, load {r['load']} | {100 * r['ratio_ours']:.1f} % of "
            f"optimum "
            f"(first-fit {100 * r['ratio_first_fit']:.1f} %) | ≥ 98 % | "
            f"{'yes' if r['ratio_ours'] >= 0.98 else 'no'} |"
        )
    for r in trace:
        q, alone, none = (r["modes"][mode] for mode in ("queue+reclaim", "queue", "no-queue"))
        p50, p95 = (
            f"{v:.0f}" if v is not None else "-" for v in (q["wait_median_min"], q["wait_p95_min"])
        )
        lines.append(
            f"| GPU queue + idle reclaim, semester trace with idle tails, load {r['load']} | "
            f"{100 * q['ratio']:.1f} % of optimum (queue alone {100 * alone['ratio']:.1f} %, no "
            f"queue "
            f"{100 * none['ratio']:.1f} %); wait p50 {p50} min, p95 {p95} min; "
            f"{100 * q['lost_share']:.1f} % "
            f"lost; {q['reclaims']} reclaims | ≥ 98 % | {'yes' if q['ratio'] >= 0.98 else 'no'} |"
        )
    lines += ["", "![spawn latency vs N](spawn-latency.png)", ""]
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
