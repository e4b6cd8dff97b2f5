#!/usr/bin/env bash
# The test command (README, .ci/run): bash scripts/test.sh
#
# Installs what is missing on Debian 12 (as root), then runs the CI stages in
# order, each in its own build directory build/ci-<stage>, and stops at the
# first failing stage. Ends with a table of stages and the line
# "<passed> passed, <failed> failed" (ctest tests summed over all ctest runs;
# the stages that are not ctest runs - headers, docs, package, format - count as
# one test each).
#
# Environment:
#   BACKPROP_CI_STAGES   comma-separated subset, e.g. "gcc,format" (default: all)
#   BACKPROP_CI_CLEAN=1  wipe each stage's build directory first
#   BACKPROP_CI_VERBOSE=1  stream the stages' output instead of logging it
#   BACKPROP_JOBS        parallel jobs for builds and ctest (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
exec 3>&1  # the terminal, for the few lines a logged stage shows directly

all_stages=(gcc clang asan tsan fuzz headers docs compile-fail package examples mpi format)
jobs=${BACKPROP_JOBS:-2}

# ---- packages ---------------------------------------------------------------
# python3-onnx: the ONNX checker of the onnx.runtime test (gcc stage); doxygen: docs stage.
packages=(cmake g++ make libeigen3-dev catch2 pkg-config clang clang-format libclang-rt-14-dev
  python3-onnx doxygen
  npm ca-certificates gzip libopenmpi-dev openmpi-bin)

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
install_missing_packages() { install_packages "${packages[@]}"; }

# ---- stage selection ----------------------------------------------------------
selected=()
if [[ -n "${BACKPROP_CI_STAGES:-}" ]]; then
  IFS=',' read -r -a requested <<<"${BACKPROP_CI_STAGES// /}"
  for s in "${requested[@]}"; do
    [[ -z "$s" ]] && continue
    [[ "$s" == compile_fail ]] && s=compile-fail
    if [[ " ${all_stages[*]} " != *" $s "* ]]; then
      echo "error: unknown stage '$s' in BACKPROP_CI_STAGES; stages: ${all_stages[*]}" >&2
      exit 2
    fi
  done
  for s in "${all_stages[@]}"; do  # keep the canonical order
    for r in "${requested[@]}"; do
      [[ "$r" == compile_fail ]] && r=compile-fail
      if [[ "$r" == "$s" ]]; then
        selected+=("$s")
        break
      fi
    done
  done
else
  selected=("${all_stages[@]}")
fi

install_missing_packages

cxx_gcc=g++
cxx_clang=clang++-14
command -v "$cxx_clang" >/dev/null 2>&1 || cxx_clang=clang++
clang_format=clang-format-14
command -v "$clang_format" >/dev/null 2>&1 || clang_format=clang-format

mkdir -p build
total_passed=0
total_failed=0
stage_names=()
stage_status=()
stage_seconds=()
stage_counts=()
tally=""  # file of "<passed> <failed>" lines of the running stage

count() { echo "$1 $2" >>"$tally"; }

# run_ctest <build dir> <ctest args...>: runs ctest with a JUnit report and adds
# its results to the stage's tallies.
run_ctest() {
  local dir=$1
  shift
  local junit
  junit="$(cd "$dir" && pwd)/ctest-junit.xml"
  rm -f "$junit"
  local rc=0
  (cd "$dir" && ctest -j "$jobs" --output-on-failure --no-tests=error --output-junit "$junit" \
    "$@") || rc=$?
  local p=0 f=0
  if [[ -f "$junit" ]]; then
    p=$(grep -c 'status="run"' "$junit" || true)
    f=$(grep -c 'status="fail"' "$junit" || true)
  fi
  if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
  count "$p" "$f"
  return "$rc"
}

# configure <build dir> <cmake args...>
configure() {
  local dir=$1
  shift
  [[ "${BACKPROP_CI_CLEAN:-0}" == 1 ]] && rm -rf "$dir"
  cmake -S "$root" -B "$dir" "$@"
}

fetch_mnist() {
  if [[ ! -f scripts/fetch_mnist.sh ]]; then
    echo "note: scripts/fetch_mnist.sh does not exist; mnist-labelled tests get no data"
    return 0
  fi
  if ! bash scripts/fetch_mnist.sh; then
    echo "error: scripts/fetch_mnist.sh failed (offline?). The mnist-labelled tests of the" >&2
    echo "gcc stage need the MNIST files; fetch them when online, or run the other stages" >&2
    echo "with e.g. BACKPROP_CI_STAGES=clang,asan,headers,compile-fail,package,examples,format" >&2
    return 1
  fi
}

gcc_args=(-DCMAKE_CXX_COMPILER="$cxx_gcc" -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" -DBACKPROP_WERROR=ON)

# ---- stages -------------------------------------------------------------------
stage_gcc() {
  fetch_mnist
  bash scripts/fetch_fashion_mnist.sh  # the Debian package dataset-fashion-mnist
  # ONNX Runtime (npm onnxruntime-node) for the onnx.runtime test, which must run here.
  local ort
  ort=$(bash scripts/fetch_onnxruntime.sh | tail -n 1)
  configure build/ci-gcc "${gcc_args[@]}" -DBACKPROP_ORT_NODE_PATH="$ort" \
    -DBACKPROP_REQUIRE_ONNX_TOOLS=ON
  cmake --build build/ci-gcc -j "$jobs"
  # The smoke runs of the examples (label "example") run once, in the examples stage.
  run_ctest build/ci-gcc -LE example
}

stage_clang() {
  # Assertions stay on (no NDEBUG) here; the gcc stage tests the NDEBUG build.
  # -march=native: the vector kernels of this CPU (AVX-512 here) are tested too; the
  # gcc stage tests the portable build. (g++ 12 with -march=native warns falsely
  # inside Eigen's AVX-512 code, so it is clang here.)
  configure build/ci-clang -DCMAKE_CXX_COMPILER="$cxx_clang" -DCMAKE_BUILD_TYPE=Release \
    "-DCMAKE_CXX_FLAGS_RELEASE=-O2" "-DCMAKE_CXX_FLAGS=-march=native" -DBACKPROP_WERROR=ON
  cmake --build build/ci-clang -j "$jobs"
  run_ctest build/ci-clang -LE 'mnist|fashion|sklearn'
}

stage_asan() {
  # No -march: Eigen is compiled for SSE2, so backprop's own dispatched kernels take every
  # product and the sigmoid (with -march=native, Eigen would take the big ones).
  local flags="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all"
  flags+=" -fno-omit-frame-pointer"
  # clang: compiles the Eigen-heavy tests about 20% faster than g++ with sanitizers.
  configure build/ci-asan -DCMAKE_CXX_COMPILER="$cxx_clang" -DCMAKE_BUILD_TYPE= \
    "-DCMAKE_CXX_FLAGS=$flags" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" \
    -DBACKPROP_WERROR=ON -DBACKPROP_BUILD_EXAMPLES=OFF
  # Examples off: their smoke runs need MNIST (excluded here); the library code they
  # call is what the unit tests run under the sanitizers.
  cmake --build build/ci-asan -j "$jobs"
  # The compile-fail tests only run the compiler with -fsyntax-only: identical to
  # the clang stage, nothing for the sanitizers to see.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build/ci-asan -LE 'mnist|fashion|compile_fail|isa'
}

stage_tsan() {
  # ThreadSanitizer over concurrent feedforward on one shared network.
  local flags="-O1 -g -fsanitize=thread -fno-omit-frame-pointer"
  configure build/ci-tsan -DCMAKE_CXX_COMPILER="$cxx_gcc" -DCMAKE_BUILD_TYPE= \
    "-DCMAKE_CXX_FLAGS=$flags" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread" \
    -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_BUILD_COMPILE_FAIL_TESTS=OFF
  cmake --build build/ci-tsan -j "$jobs" --target test_network
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build/ci-tsan/tests/test_network "[threads]"
  count 1 0
}

stage_fuzz() {
  # libFuzzer (clang) on the IDX and CSV readers, the model loader, the JSON and the ONNX reader:
  # replay the seed corpora, then fuzz each for BACKPROP_FUZZ_SECONDS (default 60).
  configure build/ci-fuzz -DCMAKE_CXX_COMPILER="$cxx_clang" -DBACKPROP_BUILD_FUZZERS=ON \
    -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_BUILD_COMPILE_FAIL_TESTS=OFF \
    -DBACKPROP_FUZZ_SECONDS="${BACKPROP_FUZZ_SECONDS:-60}"
  cmake --build build/ci-fuzz -j "$jobs" --target fuzz_idx_load fuzz_csv_load fuzz_model_load fuzz_json_load fuzz_onnx_load
  local rc=0
  run_ctest build/ci-fuzz -L fuzz -V || rc=$?
  grep -E "^[0-9]+: (Test command|stat::number_of_executed_units|Done [0-9]+ runs)" \
    "$root/build/ci-fuzz.log" >&3 || true
  return "$rc"
}

stage_headers() {
  configure build/ci-headers -DCMAKE_CXX_COMPILER="$cxx_gcc" -DBACKPROP_BUILD_TESTS=OFF \
    -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_VERIFY_HEADERS=ON
  cmake --build build/ci-headers -j "$jobs" --target all_verify_interface_header_sets
  count 1 0
}

stage_docs() {
  # The API reference (docs/Doxyfile: the public headers, README.md and the guides in
  # docs/ as pages, backprop::detail left out), into build/ci-docs/html. Any warning
  # fails the stage (WARN_AS_ERROR = FAIL_ON_WARNINGS: Doxygen prints all of them, then
  # exits non-zero): an undocumented public entity, a wrong \param name, an unknown
  # command, a reference that does not resolve. Rebuilt from scratch every run (a few
  # seconds), so no pages of removed entities linger.
  rm -rf build/ci-docs
  mkdir -p build/ci-docs
  echo "doxygen $(doxygen --version | head -n 1): docs/Doxyfile"
  local rc=0
  BACKPROP_DOCS_OUT=build/ci-docs doxygen docs/Doxyfile 2>build/ci-docs/warnings.log || rc=$?
  cat build/ci-docs/warnings.log
  if [[ $rc -ne 0 ]]; then
    echo "doxygen failed (exit $rc): $(grep -c -E ': (warning|error): ' build/ci-docs/warnings.log)" \
      "warnings, listed above and in build/ci-docs/warnings.log"
    return "$rc"
  fi
  echo "API reference: build/ci-docs/html/index.html"
  count 1 0
}

stage_compile_fail() {
  # With both compilers: the diagnostics differ and both must name our message.
  local cxx name
  for cxx in "$cxx_gcc" "$cxx_clang"; do
    name=${cxx%%-*}
    name=${name//+/x}
    configure "build/ci-compile-fail/$name" -DCMAKE_CXX_COMPILER="$cxx" \
      -DBACKPROP_BUILD_EXAMPLES=OFF -DBACKPROP_BUILD_COMPILE_FAIL_TESTS=ON
    run_ctest "build/ci-compile-fail/$name" -R '^compile_'
  done
}

stage_package() {
  [[ "${BACKPROP_CI_CLEAN:-0}" == 1 ]] && rm -rf build/ci-package
  CXX="$cxx_gcc" bash tests/package/run_package_tests.sh "$root" build/ci-package
  count 1 0
}

stage_examples() {
  fetch_mnist
  bash scripts/fetch_fashion_mnist.sh
  bash scripts/fetch_sklearn_data.sh
  # Uses the gcc build (stage 1); builds it here if this run skipped stage 1.
  configure build/ci-gcc "${gcc_args[@]}"
  cmake --build build/ci-gcc -j "$jobs"
  local n
  n=$(cd build/ci-gcc && ctest -N -L example | sed -n 's/^Total Tests: //p')
  if [[ "${n:-0}" -gt 0 ]]; then
    run_ctest build/ci-gcc -L example
  else
    echo "note: no ctest tests labelled 'example'; the examples were only built"
    count 1 0
  fi
}

stage_mpi() {
  # Data-parallel training over MPI (Open MPI): test_mpi under mpiexec with 2 ranks and
  # with 1, jobs that must abort (no hang), the MPI example's smoke runs on MNIST, and
  # the self-containment of backprop/distributed/*.hpp. Only the MPI targets are built.
  fetch_mnist
  configure build/ci-mpi "${gcc_args[@]}" -DBACKPROP_WITH_MPI=ON \
    -DBACKPROP_BUILD_COMPILE_FAIL_TESTS=OFF
  cmake --build build/ci-mpi -j "$jobs" --target test_mpi mpi_abort_demo example_04_mpi_mnist \
    backprop_mpi_verify_interface_header_sets
  run_ctest build/ci-mpi -L '^mpi$'
}

stage_format() {
  local files=()
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked files plus new, not ignored ones (so they are checked before commit).
    mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
      'include/*.hpp' 'include/*.cpp' 'tests/*.hpp' 'tests/*.cpp' 'examples/*.hpp' \
      'examples/*.cpp' 'bench/*.hpp' 'bench/*.cpp' | sort -u)
  else
    mapfile -t files < <(find include tests examples bench -type f \
      \( -name '*.hpp' -o -name '*.cpp' \) 2>/dev/null | sort)
  fi
  local existing=() f
  for f in "${files[@]}"; do [[ -f "$f" ]] && existing+=("$f"); done
  echo "checking ${#existing[@]} files with $($clang_format --version)"
  [[ ${#existing[@]} -eq 0 ]] && return 0
  local bad=()
  for f in "${existing[@]}"; do
    "$clang_format" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [[ ${#bad[@]} -gt 0 ]]; then
    "$clang_format" --dry-run --Werror "${bad[@]}" 2>&1 | head -n 60 || true
    echo "not clang-formatted (fix with: $clang_format -i <file>):"
    printf '  %s\n' "${bad[@]}"
    return 1
  fi
  count 1 0
}

# ---- driver -------------------------------------------------------------------
print_summary() {
  echo
  echo "== summary"
  printf '%-14s %-7s %8s  %s\n' stage result seconds tests
  local i
  for i in "${!stage_names[@]}"; do
    printf '%-14s %-7s %8s  %s\n' "${stage_names[$i]}" "${stage_status[$i]}" \
      "${stage_seconds[$i]}" "${stage_counts[$i]}"
  done
  echo "$total_passed passed, $total_failed failed"
}

run_start=$(date +%s)
for stage in "${selected[@]}"; do
  echo
  echo "==== stage: $stage"
  log="$root/build/ci-$stage.log"
  tally="$root/build/ci-$stage.tally"
  : >"$tally"
  start=$(date +%s)
  fn="stage_${stage//-/_}"
  # Not as `"$fn" || rc=$?`: bash would ignore set -e inside the stage.
  set +e
  if [[ "${BACKPROP_CI_VERBOSE:-0}" == 1 ]]; then
    (set -e; "$fn") 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
  else
    echo "(log: build/ci-$stage.log)"
    (set -e; "$fn") >"$log" 2>&1
    rc=$?
  fi
  set -e
  read -r stage_passed stage_failed < <(awk '{p += $1; f += $2} END {print p + 0, f + 0}' "$tally")
  # A stage that failed outside ctest (configure, build, script) counts once.
  if [[ $rc -ne 0 && $stage_failed -eq 0 ]]; then stage_failed=1; fi
  seconds=$(($(date +%s) - start))
  total_passed=$((total_passed + stage_passed))
  total_failed=$((total_failed + stage_failed))
  stage_names+=("$stage")
  stage_seconds+=("$seconds")
  stage_counts+=("$stage_passed passed, $stage_failed failed")
  if [[ $rc -ne 0 ]]; then
    stage_status+=(FAILED)
    echo "stage $stage FAILED after ${seconds}s (exit $rc); last lines of build/ci-$stage.log:"
    if [[ "${BACKPROP_CI_VERBOSE:-0}" != 1 ]]; then tail -n 80 "$log"; fi
    print_summary
    exit 1
  fi
  stage_status+=(ok)
  echo "stage $stage ok in ${seconds}s ($stage_passed passed)"
done
echo
echo "all stages passed in $(($(date +%s) - run_start))s"
print_summary
