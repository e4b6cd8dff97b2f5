"""The table of `bench/run.sh --builds`: seconds per run of every workload from each
build (the median of the interleaved rounds), with the speed relative to the last build
of the list, and the flags and instruction sets each build used."""
import glob
import json
import os
import statistics
import sys


def main() -> None:
    folder, specs = sys.argv[1], sys.argv[2].split(",")
    times, info = {}, {}
    for spec in specs:
        for path in glob.glob(os.path.join(folder, spec.replace("@", "-") + "_t*_r*.json")):
            threads = os.path.basename(path).rsplit("_t", 1)[1].split("_r")[0]
            for rep in json.load(open(path)):
                meta = rep["meta"]
                info[spec] = (meta.get("flags", ""), meta.get("kernels", "-"), meta.get("simd", ""))
                for r in rep["records"]:
                    if r.get("median_s"):
                        key = (int(threads), r["workload"], r["kind"], rep["peer"])
                        times.setdefault(key, {}).setdefault(spec, []).append(r["median_s"])
    print(f"\n### Builds (seconds per run, median of the rounds; (Nx): speed relative to {specs[-1]})\n")
    for spec in specs:
        flags, kernels, simd = info.get(spec, ("?", "?", "?"))
        print(f"- {spec}: flags `{flags.strip()}`; backprop's kernels: {kernels}; Eigen: {simd}")
    print("\n| threads | workload | peer | " + " | ".join(specs) + " |")
    print("|---|---|---|" + "---|" * len(specs))
    for key in sorted(times):
        row = times[key]
        ref = statistics.median(row[specs[-1]]) if specs[-1] in row else None
        cells = []
        for spec in specs:
            if spec not in row:
                cells.append("-")
                continue
            m = statistics.median(row[spec])
            cells.append(f"{m:.4g}" + (f" ({ref / m:.2f}x)" if ref else ""))
        print(f"| {key[0]} | {key[1]} {key[2]} | {key[3]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
