#!/usr/bin/python3
"""Merges the JSON reports of bench/run.sh into one Markdown table (stdout) and one JSON file.

usage: merge.py --out results.json [--machine machine.json] [--compile compile.json] REPORT.json...
Each REPORT.json holds one report object or a list of them (peer, threads, meta, skipped,
records); --check reports (kind "check") go to the equivalence table.
"""
import argparse
import json
import statistics
import sys

PEERS = ["backprop", "eigen", "torch", "tiny-dnn", "numpy-batched", "numpy-seed"]
PEER_TITLES = {
    "backprop": "backprop",
    "eigen": "plain Eigen",
    "torch": "libtorch",
    "tiny-dnn": "tiny-dnn",
    "numpy-batched": "numpy batched",
    "numpy-seed": "numpy seed loop",
}
ROWS = [
    ("W1", "train", "W1 784-30-10 sigmoid, batch 10 (train)"),
    ("W2", "train", "W2 784-100-10 sigmoid, batch 10 (train)"),
    ("W3", "train", "W3 784-256-128-10 sigmoid, batch 64 (train)"),
    ("W4", "train", "W4 784-1024-1024-10 ReLU+softmax, batch 256 (train)"),
    ("W5", "latency", "W5 784-100-10 inference, batch 1 (us/sample)"),
    ("W5", "throughput", "W5 784-100-10 inference, batch 10000"),
    ("W6", "backprop", "W6 784-30-10 per-sample backprop(x, y)"),
    ("W7", "train", "W7 conv20 5x5-pool-conv40 5x5-pool-100-10 ReLU+softmax, batch 10 (train)"),
    ("W7", "latency", "W7 CNN inference, batch 1 (us/image)"),
    ("W7", "throughput", "W7 CNN inference, batch 10000"),
]
# Samples a latency or throughput record is meant to have (fewer: marked †).
FULL_INFERENCE = {("W7", "latency"): 2000}
OUTPUT_TOLERANCE = 1e-4  # relative, outputs of the same network from the same weights
CHECKS = [("W1", "quadratic"), ("W4", "log-likelihood"), ("W7", "CNN, log-likelihood"),
          ("W7-500", "W7 after 500 samples")]


def load(paths):
    reports = []
    for p in paths:
        try:
            with open(p) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"merge: cannot read {p}: {e}", file=sys.stderr)
            continue
        for r in data if isinstance(data, list) else [data]:
            if isinstance(r, dict) and "records" in r:
                reports.append(r)
    return reports


METRIC = {"mode": "auto"}


def seconds(rec, threads):
    """Median seconds of a record: process CPU time for 1-thread runs (unless --metric
    wall), which stays right when other processes share the cores; wall time otherwise."""
    if threads == 1 and METRIC["mode"] != "wall" and rec.get("cpu_times"):
        return statistics.median(rec["cpu_times"])
    return rec.get("median_s")


def speed(rec, threads=2):
    """samples/s."""
    t = seconds(rec, threads)
    return rec["samples"] / t if t else None


def cpu_ratio(rec):
    cpu, wall = rec.get("cpu_times") or [], rec.get("times") or []
    if not cpu or not wall:
        return None
    return statistics.median(cpu) / statistics.median(wall)


def fmt_speed(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--machine", default="")
    ap.add_argument("--compile", default="")
    ap.add_argument("--full-samples", type=int, default=50000)
    ap.add_argument("--metric", choices=["auto", "wall"], default="auto",
                    help="auto: CPU time for 1-thread runs, wall for more; wall: wall always")
    ap.add_argument("reports", nargs="+")
    args = ap.parse_args()
    METRIC["mode"] = args.metric
    reports = load(args.reports)
    machine = json.load(open(args.machine)) if args.machine else {}
    compile_info = json.load(open(args.compile)) if args.compile else {}

    # index: (threads, peer, workload, kind) -> record
    idx, checks, outputs, peaks, skipped, metas = {}, {}, {}, {}, [], {}
    for r in reports:
        t, peer = r["threads"], r["peer"]
        metas.setdefault(peer, r.get("meta", {}))
        for s in r.get("skipped", []):
            skipped.append((peer, t, s["workload"], s["why"]))
        for rec in r["records"]:
            if rec["kind"] == "check":
                checks[(peer, rec["workload"])] = rec["check_value"]
            elif rec["kind"] == "outputs":
                outputs[(peer, rec["workload"])] = rec
            elif rec["kind"] == "peak":
                peaks[(peer, rec["workload"])] = rec
            else:
                idx[(t, peer, rec["workload"], rec["kind"])] = rec
    threads = sorted({k[0] for k in idx})
    out = []
    w = out.append

    w("# backprop benchmark (issue 5)\n")
    if machine:
        w(f"Machine: {machine.get('cpu', '?')}, nproc {machine.get('nproc', '?')}, "
          f"{machine.get('kernel', '')}; {machine.get('compiler', '')}; "
          f"load average before/after: {machine.get('load_before', '?')} / "
          f"{machine.get('load_after', '?')}\n")
    w("Samples/s are medians of the runs: " + (
        "of the process CPU time for 1-thread runs (robust when other processes share the "
        "2 cores; on an idle machine it equals wall time) and of wall time for 2 threads. "
        if args.metric == "auto" else "of wall-clock time. ") + "GFLOP/s count nominal flops: "
      "forward = sum over layers of 2*in*out per sample; training = 3 x forward "
      "(forward + backward delta + weight gradient); latency and throughput rows = forward only. "
      "W7 (the chapter-6 convolutional network) counts its real multiply-adds: 2 flops per "
      "multiply-add of the convolutions (OH*OW*filters*C*K*K: conv1 24*24*20*25, conv2 "
      "8*8*40*500) and Dense layers (640*100 + 100*10), 3.27 MFLOP forward per image, "
      "pooling not counted, training = 3 x forward. "
      "Nominal training flops exceed the real work, since every implementation here but "
      "tiny-dnn skips the input layer's backward delta: real/nominal = 0.67 (W1, W2, W6), "
      "0.72 (W3), 0.86 (W4), 0.94 (W7), so a nominal figure can pass the sgemm peak. "
      "Ratio = peer speed / backprop speed (below 1: backprop is faster). "
      "The same data, initial weights and hyper-parameters are used by every peer.\n")

    # sgemm peaks
    best_peak = {}
    if peaks:
        w("## sgemm peak (2048^3 float GEMM)\n")
        w("| library | 1 thread GFLOP/s | 2 threads GFLOP/s |")
        w("|---|---|---|")
        names = {"eigen": "Eigen 3.4 (bench_backprop build flags)",
                 "numpy-batched": "OpenBLAS via numpy", "torch": "libtorch (torch::mm, OpenBLAS)"}
        for peer in ("eigen", "numpy-batched", "torch"):
            cells = []
            for t in (1, 2):
                rec = peaks.get((peer, f"sgemm_t{t}"))
                if rec and seconds(rec, t):
                    g = rec["flops_per_sample"] / seconds(rec, t) * 1e-9
                    best_peak[t] = max(best_peak.get(t, 0), g)
                    cells.append(f"{g:.1f}")
                else:
                    cells.append("-")
            if any(c != "-" for c in cells):
                w(f"| {names[peer]} | {cells[0]} | {cells[1]} |")
        w("")

    def kind_pair_table(t, workloads, other_kind, title, header):
        """backprop's "train" record of each workload against its other_kind record."""
        rows = []
        for wid in workloads:
            a = idx.get((t, "backprop", wid, "train"))
            b = idx.get((t, "backprop", wid, other_kind))
            if a and b:
                rows.append(f"| {wid} | {fmt_speed(speed(a, t))}/s | {fmt_speed(speed(b, t))}/s | "
                            f"{speed(b, t) / speed(a, t):.2f} |")
        if rows:
            w(title)
            w(header)
            w("|---|---|---|---|")
            out.extend(rows)
            w("")

    notes = []
    for t in threads:
        busy = []
        present = [p for p in PEERS if any(k[0] == t and k[1] == p for k in idx)]
        others = [p for p in present if p != "backprop"]
        w(f"## {t} thread{'s' if t > 1 else ''}: samples/s (ratio peer/backprop)\n")
        w("| " + " | ".join(["workload", "backprop"] + [PEER_TITLES[p] for p in others]) + " |")
        w("|---|---|" + "---|" * len(others))
        for wid, kind, title in ROWS:
            if not any((t, p, wid, kind) in idx for p in present):
                continue  # not run (--only)
            ours = idx.get((t, "backprop", wid, kind))
            ours_speed = speed(ours, t) if ours else None
            cells = []
            for p in ["backprop"] + others:
                rec = idx.get((t, p, wid, kind))
                if rec is None:
                    cells.append("-")
                    continue
                sp = speed(rec, t)
                mark = ""
                full = (FULL_INFERENCE.get((wid, kind), 10000)
                        if kind in ("latency", "throughput") else args.full_samples)
                if rec["samples"] < min(args.full_samples, full):
                    mark += "†"
                cr = cpu_ratio(rec)
                if cr is not None and cr < 0.9 * t:
                    mark += "‡"
                    busy.append(f"{PEER_TITLES[p]} {wid} {kind} {cr:.2f}")
                if kind == "latency":
                    text = f"{1e6 / sp:.2f} us"
                else:
                    text = f"{fmt_speed(sp)}/s"
                if p != "backprop" and ours_speed:
                    text += f" ({sp / ours_speed:.2f}x)"
                cells.append(text + mark)
            w(f"| {title} | " + " | ".join(cells) + " |")
        w("")
        if busy:
            notes.append(f"‡ ({t} thread{'s' if t > 1 else ''}) process CPU / wall below "
                         f"{0.9 * t:.1f}: other processes took the cores during the run"
                         + (" (the CPU-time speed shown is still valid)" if t == 1 and
                            args.metric == "auto" else "") + ": " + ", ".join(busy))
        w(f"### {t} thread{'s' if t > 1 else ''}: GFLOP/s (% of the best {t}-thread sgemm peak"
          f"{' = %.1f GFLOP/s' % best_peak[t] if t in best_peak else ''})\n")
        w("| workload | " + " | ".join(PEER_TITLES[p] for p in present) + " |")
        w("|---|" + "---|" * len(present))
        for wid, kind, title in ROWS:
            if not any((t, p, wid, kind) in idx for p in present):
                continue
            cells = []
            for p in present:
                rec = idx.get((t, p, wid, kind))
                if rec is None:
                    cells.append("-")
                    continue
                g = speed(rec, t) * rec["flops_per_sample"] * 1e-9
                pk = f" ({100 * g / best_peak[t]:.0f}%)" if t in best_peak else ""
                cells.append(f"{g:.2f}{pk}")
            w(f"| {wid} {kind} | " + " | ".join(cells) + " |")
        w("")
        plural = "s" if t > 1 else ""
        kind_pair_table(t, ("W1", "W2"), "train_5_epochs",
                        f"### {t} thread{plural}: backprop net.sgd(), a one-epoch call vs 5 "
                        "epochs in one call (sgd's set-up, the sparse copy of the inputs, once "
                        "per call)\n", "| workload | 1-epoch call | 5-epoch call | ratio |")
        kind_pair_table(t, ("W1", "W2", "W3", "W4", "W7"), "train_contiguous",
                        f"### {t} thread{plural}: backprop net.sgd() vs update_mini_batch on "
                        "contiguous columns (no shuffle, no gather)\n",
                        "| workload | sgd() | update_mini_batch loop | ratio |")
        kind_pair_table(t, ("W1", "W2", "W3", "W4", "W7"), "train_gathered",
                        f"### {t} thread{plural}: backprop net.sgd() vs a user's loop that "
                        "shuffles, copies each batch's columns and calls update_mini_batch\n",
                        "| workload | sgd() | update_mini_batch loop | ratio |")
        kind_pair_table(t, ("W7",), "train_thread_ranks",
                        f"### {t} thread{plural}: backprop net.sgd() on Eigen's threads vs "
                        "data-parallel sgd with one rank per thread (each rank a share of "
                        "every mini-batch)\n",
                        "| workload | sgd() | thread ranks | ratio |")

    limited = sorted({(k[1], k[2], k[3], rec["samples"]) for k, rec in idx.items()
                      if rec["kind"] in ("train", "backprop") and rec["samples"] < args.full_samples})
    if limited:
        notes.append("† fewer samples than one epoch (samples/s is still comparable): " + "; ".join(
            f"{PEER_TITLES[p]} {wid} {kind}: {n}" for p, wid, kind, n in limited))

    if checks:
        w("## Equivalence check (same initial weights, 5000 samples in order, "
          "cost on the first 1000)\n")
        w("| peer | " + " | ".join(f"{wid} ({what})" for wid, what in CHECKS) + " |")
        w("|---|" + "---|" * len(CHECKS))
        for p in PEERS:
            values = [checks.get((p, wid)) for wid, _ in CHECKS]
            if any(v is not None for v in values):
                w(f"| {PEER_TITLES[p]} | " + " | ".join(
                    "%.7g" % v if v is not None else "-" for v in values) + " |")
        spreads = []
        for wid, _ in CHECKS:
            vs = [checks[(p, wid)] for p in PEERS if checks.get((p, wid)) is not None]
            spreads.append(f"{(max(vs) - min(vs)) / abs(min(vs)):.1e}" if len(vs) > 1 and min(vs)
                           else "-")
        w("| (max - min) / min | " + " | ".join(spreads) + " |")
        w("")
        if any(checks.get((p, "W7")) is not None for p in PEERS):
            w("W7's float training at eta 0.03 and batch 10 is sensitive to rounding (once a "
              "ReLU or max-pool switch flips on a rounding-level difference, every later step "
              "differs): after 5000 samples float runs can differ by several percent (backprop "
              "with 1 and 2 threads: 0.1921 and 0.2111; in double, backprop and libtorch both "
              "give 0.1997530), so its equivalence is the W7-500 column (500 samples, 50 "
              "mini-batches).\n")

    if any(k[1] == "W7" for k in outputs):
        ref = outputs.get(("backprop", "W7"))
        w("## W7 inference outputs (initial weights, first 100 images, 10 softmax outputs "
          "each) against backprop\n")
        w("| peer | max abs difference | max relative difference | "
          f"within {OUTPUT_TOLERANCE:g} relative |")
        w("|---|---|---|---|")
        for p in PEERS:
            rec = outputs.get((p, "W7"))
            if p == "backprop" or rec is None:
                continue
            if ref is None or len(ref["values"]) != len(rec["values"]):
                w(f"| {PEER_TITLES[p]} | - | - | no backprop outputs to compare |")
                continue
            diffs = [(abs(a - b), abs(a - b) / max(abs(a), abs(b), 1e-30))
                     for a, b in zip(ref["values"], rec["values"])]
            worst_abs = max(d[0] for d in diffs)
            worst_rel = max(d[1] for d in diffs)
            w(f"| {PEER_TITLES[p]} | {worst_abs:.2e} | {worst_rel:.2e} | "
              f"{'yes' if worst_rel <= OUTPUT_TOLERANCE else 'NO'} |")
        if ref is not None:
            w(f"\nbackprop: {ref.get('note', '')}\n")
        else:
            w("")

    if compile_info:
        w("## Compile cost (g++, Release, /usr/bin/time -v)\n")
        w("| translation unit | wall s | user+sys CPU s | peak RSS MiB |")
        w("|---|---|---|---|")
        for tu, c in compile_info.items():
            w(f"| {tu} | {c.get('wall_s', '?')} | {c.get('cpu_s', '?')} | "
              f"{c.get('max_rss_mib', '?')} |")
        w("")

    if skipped:
        w("## Skipped\n")
        for peer, t, wid, why in skipped:
            w(f"- {PEER_TITLES.get(peer, peer)} ({t}t) {wid}: {why}")
        w("")
    w("## Notes\n")
    for n in notes:
        w(f"- {n}")
    for peer in PEERS:
        m = metas.get(peer)
        if not m:
            continue
        keep = {k: v for k, v in m.items() if k not in ("config",)}
        w(f"- {PEER_TITLES[peer]}: " + "; ".join(f"{k}: {v}" for k, v in keep.items()))
    text = "\n".join(out) + "\n"
    print(text)
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "compile": compile_info, "reports": reports,
                   "markdown": text}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
