#!/usr/bin/env bash
# The MPI benchmark of issue 7: samples/s of one epoch of 784-100-10 sigmoid (quadratic
# cost, eta 3) with 64 samples per rank and mini-batch (global 64 x ranks), on 1 and 2
# ranks, median of 3 epochs, with the share of the time spent in MPI_Allreduce and the
# bytes summed per step. Prints a Markdown table (stdout); raw JSON in build/mpi-bench/.
#
#   bash bench/run_mpi.sh [--runs 3] [--samples 50000] [--batch 64] [--ranks 1,2]
#                         [--no-install]
#
# Data: the first 50,000 MNIST training images when .cache/data/mnist exists (see
# scripts/fetch_mnist.sh), else bench's seeded MNIST-shaped synthetic data.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/mpi-bench"
runs=3
samples=50000
batch=64
ranks="1,2"
install=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run_mpi.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
say() { echo "== $*" >&2; }

if [[ $install -eq 1 ]]; then
  # shellcheck source=scripts/deps.sh
  source "$root/scripts/deps.sh"
  install_packages cmake g++ make libeigen3-dev libopenmpi-dev openmpi-bin python3 >&2
fi

say "configuring $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" \
  -DBACKPROP_WITH_MPI=ON -DBACKPROP_BUILD_BENCH=ON -DBACKPROP_BUILD_TESTS=OFF \
  -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_VERIFY_HEADERS=OFF -DBACKPROP_INSTALL=OFF \
  >"$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
say "building bench_mpi"
cmake --build "$build" --target bench_mpi -j 2 >"$build.build.log" 2>&1 ||
  { tail -50 "$build.build.log" >&2; exit 1; }

flags=()
if mpiexec --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  flags+=(--oversubscribe)
  [[ $(id -u) -eq 0 ]] && flags+=(--allow-run-as-root)
  # Bind each rank to its own core (a 2-rank job on a 2-core machine).
  flags+=(--bind-to core)
fi
common=(--samples "$samples" --runs "$runs" --batch "$batch")
mnist="$root/.cache/data/mnist"
if [[ -f "$mnist/train-images-idx3-ubyte" || -f "$mnist/train-images-idx3-ubyte.gz" ]]; then
  common+=(--mnist "$mnist")
else
  say "no $mnist: synthetic data"
fi
out="$build/results"
rm -rf "$out"
mkdir -p "$out"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "machine: $cpu, nproc $(nproc), load $load_before"

# One rank: the library's default single-process path (the sparse first layer, as
# SgdOptions::sparse_input_density allows) and the dense path the data-parallel code uses.
say "1 rank, default path"
mpiexec -n 1 "${flags[@]}" "$build/bench/bench_mpi" "${common[@]}" --json "$out/np1.json"
say "1 rank, dense first layer (--sparse-density 0)"
mpiexec -n 1 "${flags[@]}" "$build/bench/bench_mpi" "${common[@]}" --sparse-density 0 \
  --json "$out/np1_dense.json"
for n in ${ranks//,/ }; do
  [[ $n -eq 1 ]] && continue
  say "$n ranks"
  mpiexec -n "$n" "${flags[@]}" "$build/bench/bench_mpi" "${common[@]}" --json "$out/np$n.json"
done

python3 - "$out" "$cpu" "$(nproc)" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$(g++ --version | head -1)" "$(mpiexec --version 2>/dev/null | head -1)" <<'PY'
import json, os, sys
out, cpu, nproc, load0, load1, cxx, mpiv = sys.argv[1:8]
rows = []
for name in sorted(os.listdir(out)):
    if name.endswith(".json"):
        r = json.load(open(os.path.join(out, name)))
        r["name"] = name
        rows.append(r)
dense1 = next((r for r in rows if r["name"] == "np1_dense.json"), None)
rows.sort(key=lambda r: (r["ranks"], r["name"] != "np1.json"))
print(f"One epoch of {rows[0]['samples']:,} samples ({rows[0]['source']}), 784-100-10 sigmoid, "
      f"quadratic cost, PlainSgd eta 3, {rows[0]['batch_per_rank']} samples per rank and step; "
      f"median of {len(rows[0]['wall_s'])} epochs.\n")
print("| ranks | first layer | global batch | steps | samples/s | vs 1 rank (dense) "
      "| time in allreduce | bytes summed per step | one allreduce alone |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    layer = "dense" if r["ranks"] > 1 or r["sparse_density"] == 0 else "sparse (default)"
    speed = r["samples_per_s"] / dense1["samples_per_s"] if dense1 else float("nan")
    comm = "-" if r["ranks"] == 1 else f"{100 * r['comm_share_median']:.1f}% ({r['comm_s_median']:.2f} s)"
    nbytes = "-" if r["ranks"] == 1 else f"{r['bytes_per_step'] / 1000:.0f} kB"
    alone = "-" if r["ranks"] == 1 else f"{r['allreduce_us']:.0f} us ({r['step_buffer_bytes'] / 1000:.0f} kB)"
    print(f"| {r['ranks']} | {layer} | {r['global_batch']} | {r['steps']} | "
          f"{r['samples_per_s']:,.0f} | {speed:.2f}x | {comm} | {nbytes} | {alone} |")
print(f"\nMachine: {cpu}, {nproc} cores; {cxx}; {mpiv}; load average {load0} before, "
      f"{load1} after.")
PY
