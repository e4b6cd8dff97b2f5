#!/usr/bin/env bash
# One command for the whole benchmark of issue 5: installs the peers' Debian packages
# when missing, configures and builds build/bench (Release), runs backprop, plain Eigen,
# libtorch, tiny-dnn and numpy on the same data, and merges everything into one
# Markdown table (stdout) and one JSON file.
#
#   bash bench/run.sh [--threads 1,2] [--runs 3] [--json PATH] [--samples 50000]
#                     [--only W1,W5] [--no-install] [--quick] [--builds LIST]
#
# --threads  comma-separated thread counts to run (default 1); the sgemm peak is always
#            measured with 1 and 2 threads.
# --json     merged results (default bench/results.json).
# --quick    1 run and 5000 samples per workload (a smoke test, not a measurement).
# --builds   also compare builds of backprop + plain Eigen, e.g. default,avx2,native:
#            default = CMake's Release flags (-O3, no -march), avx2 = -O3 -mavx2 -mfma,
#            native = the main build; NAME@ISA caps backprop's kernels (BACKPROP_MAX_ISA,
#            e.g. default@avx2: a default build as an AVX2-only CPU runs it). Rounds of
#            all builds are interleaved; a table of seconds per build follows, with the
#            instruction set each used (builds: build/bench-NAME).
# Peers whose library is missing are skipped with a message, never faked.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/bench"
threads="1"
runs=3
samples=50000
json="$root/bench/results.json"
only=""
install=1
builds=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --builds) builds="$2"; shift 2 ;;
    --quick) runs=1; samples=5000; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$json" in /*) ;; *) json="$PWD/$json" ;; esac
say() { echo "== $*" >&2; }

# ---- packages ----
python=/usr/bin/python3  # Debian's, with python3-numpy (not a pyenv python on PATH)
if [[ $install -eq 1 ]]; then
  want=(cmake g++ libeigen3-dev time python3-numpy python3-threadpoolctl libopenblas-dev
        libtorch-dev tiny-dnn libcereal-dev libgemmlowp-dev libstb-dev)
  missing=()
  for p in "${want[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    free_gb=$(df -Pk "$root" | awk 'NR==2 {print int($4 / 1048576)}')
    if [[ " ${missing[*]} " == *" libtorch-dev "* && $free_gb -lt 6 ]]; then
      say "only ${free_gb} GB free: not installing libtorch-dev (about 1.5 GB with its dependencies)"
      missing=("${missing[@]/libtorch-dev}")
    fi
    say "installing: ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
      export DEBIAN_FRONTEND=noninteractive
      { apt-get update -q && apt-get install -y -q --no-install-recommends ${missing[*]}; } \
        >"${TMPDIR:-/tmp}/bench_apt.log" 2>&1 ||
        say "apt-get failed (see ${TMPDIR:-/tmp}/bench_apt.log); missing peers will be skipped"
    else
      say "not root: cannot install ${missing[*]}; missing peers will be skipped"
    fi
  fi
fi

# ---- configure and build ----
say "configuring $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBACKPROP_BUILD_BENCH=ON \
  -DBACKPROP_BUILD_TESTS=OFF -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_VERIFY_HEADERS=OFF \
  -DBACKPROP_INSTALL=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
grep '^-- bench:' "$build.configure.log" >&2 || true
targets=(bench_backprop)
available=$(cmake --build "$build" --target help 2>/dev/null || true)
for t in bench_torch bench_tinydnn bench_tinydnn_mt; do
  grep -qw "$t" <<<"$available" && targets+=("$t")
done
say "building ${targets[*]}"
cmake --build "$build" --target "${targets[@]}" -j 2 >"$build.build.log" 2>&1 ||
  { tail -50 "$build.build.log" >&2; exit 1; }
bin="$build/bench"
out="$build/results"
rm -rf "$out"
mkdir -p "$out"

# ---- compile cost of the bench_backprop translation units ----
"$python" - "$build/compile_commands.json" "$out/compile.json" <<'EOF'
import json, re, subprocess, sys
cmds = json.load(open(sys.argv[1]))
res = {}
for c in cmds:
    name = c["file"].rsplit("/", 1)[-1]
    if name not in ("bench_backprop.cpp", "plain_eigen.cpp"):
        continue
    cmd = re.sub(r" -o \S+", " -o /dev/null", c["command"])
    p = subprocess.run(["/usr/bin/time", "-v", "sh", "-c", cmd], cwd=c["directory"],
                       capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", p.stderr))
    secs = (int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
            if wall else None)
    res[name] = {"wall_s": round(secs, 1) if secs else None, "cpu_s": round(cpu, 1),
                 "max_rss_mib": round(int(rss.group(1)) / 1024) if rss else None}
json.dump(res, open(sys.argv[2], "w"))
EOF

# ---- machine ----
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
say "machine: $cpu, nproc $(nproc), load $load_before"
if [[ $(cut -d' ' -f1 /proc/loadavg | cut -d. -f1) -ge 1 ]]; then
  say "warning: the machine is busy (load $load_before); timings will be noisy"
fi

# ---- data (real MNIST when scripts/fetch_mnist.sh has put it there) ----
data="$build/data.bin"
mnist="$root/.cache/data/mnist"
if [[ -d "$mnist" ]]; then
  "$bin/bench_backprop" --write-data "$data" --samples "$samples" --mnist "$mnist"
else
  say "no $mnist: synthetic data"
  "$bin/bench_backprop" --write-data "$data" --samples "$samples"
fi
common=(--data "$data" --runs "$runs" --samples "$samples")
[[ -n "$only" ]] && common+=(--only "$only")
# Slow peers run fewer samples (samples/s stays comparable; the table marks them).
td_limit="W2=20000,W3=5000,W4=768,W6=20000,W7=5000"
seed_limit="W2=20000,W3=10000,W6=20000"
if [[ $samples -lt 50000 ]]; then td_limit="W3=2000,W4=256,W6=5000,W7=1000"; fi
np_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
for v in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  [[ -n "${!v:-}" ]] && say "note: $v=${!v} is set; unset for the numpy peers only (libtorch also uses OpenBLAS and keeps it)"
done
# Debian 12's OpenBLAS (0.3.21) does not recognise some newer CPUs (an Intel Xeon guest
# here) and falls back to its Prescott (SSE3) kernels, a quarter of its speed: the
# OpenBLAS peers (libtorch, numpy) then get the kernels the CPU can run.
if [[ -z "${OPENBLAS_CORETYPE:-}" ]]; then
  blas_arch=$("$python" -c 'import threadpoolctl, numpy
print(next((i.get("architecture", "") for i in threadpoolctl.threadpool_info()
            if i.get("internal_api") == "openblas"), ""))' 2>/dev/null || true)
  blas_fix=""
  if [[ "$blas_arch" == Prescott ]]; then
    if grep -qw avx512f /proc/cpuinfo; then
      blas_fix=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then
      blas_fix=Haswell
    fi
  fi
  if [[ -n "$blas_fix" ]]; then
    say "OpenBLAS detects this CPU as $blas_arch: OPENBLAS_CORETYPE=$blas_fix for libtorch and numpy"
    export OPENBLAS_CORETYPE=$blas_fix
    np_env=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE="$blas_fix")
  fi
fi

# ---- equivalence check: every peer from the same weights must reach the same cost ----
say "equivalence check"
"$bin/bench_backprop" --check --data "$data" --json "$out/check_backprop.json"
[[ -x "$bin/bench_torch" ]] && "$bin/bench_torch" --check --data "$data" --json "$out/check_torch.json"
[[ -x "$bin/bench_tinydnn" ]] && "$bin/bench_tinydnn" --check --data "$data" --json "$out/check_tinydnn.json"
if "$python" -c 'import numpy' 2>/dev/null; then
  "${np_env[@]}" "$python" "$root/bench/numpy_seed.py" --check --data "$data" --json "$out/check_numpy.json"
fi

# ---- the runs ----
first=1
for t in ${threads//,/ }; do
  peak=()
  [[ $first -eq 1 ]] && peak=(--peak)
  export OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t"
  say "threads=$t: backprop + plain Eigen"
  "$bin/bench_backprop" --threads "$t" "${common[@]}" "${peak[@]}" --json "$out/backprop_t$t.json"
  if [[ -x "$bin/bench_torch" ]]; then
    say "threads=$t: libtorch"
    "$bin/bench_torch" --threads "$t" "${common[@]}" "${peak[@]}" --json "$out/torch_t$t.json"
  else
    say "libtorch: skipped (not built: apt-get install libtorch-dev)"
  fi
  td="$bin/bench_tinydnn"
  [[ $t -gt 1 ]] && td="$bin/bench_tinydnn_mt"
  if [[ -x "$td" && ( $t -eq 1 || $t -eq $(nproc) ) ]]; then
    say "threads=$t: tiny-dnn"
    "$td" --threads "$t" "${common[@]}" --limit "$td_limit" --json "$out/tinydnn_t$t.json"
  else
    say "tiny-dnn: skipped for $t threads (not built, or its pool size is fixed to nproc)"
  fi
  if "$python" -c 'import numpy' 2>/dev/null; then
    say "threads=$t: numpy"
    "${np_env[@]}" "$python" "$root/bench/numpy_seed.py" --threads "$t" "${common[@]}" \
      "${peak[@]}" --seed-limit "$seed_limit" --json "$out/numpy_t$t.json"
  else
    say "numpy: skipped ($python has no numpy: apt-get install python3-numpy)"
  fi
  first=0
done

# ---- builds: the same workloads from builds with other flags, rounds interleaved ----
if [[ -n "$builds" ]]; then
  mkdir -p "$out/builds"
  declare -A build_bin=() build_isa=()
  for spec in ${builds//,/ }; do
    name=${spec%@*}
    isa=""
    [[ "$spec" == *@* ]] && isa=${spec#*@}
    case "$name" in
      native) dir="$build" ;;
      default | avx2)
        dir="$root/build/bench-$name"
        flags=""
        [[ $name == avx2 ]] && flags="-mavx2 -mfma"
        say "building bench_backprop ($name: -O3 $flags)"
        cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DBACKPROP_BUILD_BENCH=ON \
          -DBACKPROP_BENCH_NATIVE=OFF "-DCMAKE_CXX_FLAGS=$flags" -DBACKPROP_BUILD_TESTS=OFF \
          -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_VERIFY_HEADERS=OFF -DBACKPROP_INSTALL=OFF \
          >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log" >&2; exit 1; }
        cmake --build "$dir" --target bench_backprop -j 2 >"$dir.build.log" 2>&1 ||
          { tail -50 "$dir.build.log" >&2; exit 1; }
        ;;
      *) echo "run.sh: unknown build $name in --builds (default, avx2, native)" >&2; exit 2 ;;
    esac
    build_bin[$spec]="$dir/bench/bench_backprop"
    build_isa[$spec]="$isa"
  done
  for t in ${threads//,/ }; do
    export OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t"
    for ((round = 1; round <= runs; round++)); do
      for spec in ${builds//,/ }; do
        say "builds: threads=$t round $round: $spec"
        env ${build_isa[$spec]:+BACKPROP_MAX_ISA=${build_isa[$spec]}} "${build_bin[$spec]}" \
          --threads "$t" --data "$data" --runs 1 --samples "$samples" ${only:+--only "$only"} \
          --json "$out/builds/${spec//@/-}_t${t}_r$round.json" >/dev/null
      done
    done
  done
  "$python" "$root/bench/builds_table.py" "$out/builds" "$builds"
fi

# ---- merge ----
"$python" - "$out/machine.json" "$cpu" "$load_before" <<'EOF'
import json, os, platform, subprocess, sys
cxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
json.dump({"cpu": sys.argv[2], "nproc": os.cpu_count(), "kernel": platform.release(),
           "compiler": cxx, "load_before": sys.argv[3],
           "load_after": " ".join(open("/proc/loadavg").read().split()[:3])},
          open(sys.argv[1], "w"))
EOF
mkdir -p "$(dirname "$json")"
"$python" "$root/bench/merge.py" --out "$json" --machine "$out/machine.json" \
  --compile "$out/compile.json" --full-samples "$samples" "$out"/*.json
say "results: $json (raw reports in $out)"
