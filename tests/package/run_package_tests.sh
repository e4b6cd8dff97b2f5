#!/usr/bin/env bash
# Package tests: install backprop to a temporary prefix, then build and run
#   1. a find_package() consumer (checks backprop_DIR is under the prefix),
#   2. an add_subdirectory() consumer (checks backprop's tests/examples stay out),
#   3. a plain compiler command using pkg-config, and a FetchContent consumer (from this
#      git repository at HEAD),
#   4. when MPI is installed (mpicxx and mpiexec), a find_package(backprop COMPONENTS mpi)
#      consumer run with mpiexec -n 2; without MPI, that the component is reported missing.
#      The plain consumer must not look for MPI at all.
# Usage: run_package_tests.sh <source-dir> <work-dir>   (work-dir is wiped)
# Honours CXX (compiler) and CMAKE_GENERATOR from the environment.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <source-dir> <work-dir>" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
here="$src/tests/package"
prefix="$work/prefix"
jobs=${BACKPROP_JOBS:-2}

step=""
fail() {
  echo "package test FAILED: $*" >&2
  step=""
  exit 1
}
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && -n "$step" ]]; then echo "package test FAILED in step: $step (exit $rc)" >&2; fi
}
trap on_exit EXIT

run() {  # run <step name> <command...>: prints the command, keeps quiet unless it fails
  step=$1
  shift
  echo "+ $*"
  local log="$work/last.log"
  if ! "$@" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    fail "$step"
  fi
}

rm -rf "$work/build" "$work/prefix" "$work/moved" "$work/consumer" "$work/consumer-buildtree" \
  "$work/consumer-moved" "$work/subdir" "$work/pkgconfig" "$work/consumer-mpi" \
  "$work/consumer-mpi-buildtree" "$work/consumer-mpi-none" "$work/consumer-mpi-bad"

# MPI is "installed" when its compiler wrapper and launcher are; then backprop's build
# finds it and must install the mpi component.
have_mpi=0
if command -v mpicxx >/dev/null 2>&1 && command -v mpiexec >/dev/null 2>&1; then have_mpi=1; fi

# A machine without Catch2 (simulated): configuring with the defaults and installing
# works, and says the tests are not built.
echo "== configure and install with the defaults, without Catch2"
run "configure without Catch2" cmake -S "$src" -B "$work/nocatch" -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=TRUE \
  "-DCMAKE_INSTALL_PREFIX=$work/nocatch-prefix"
grep -q "Catch2 2.13 not found, so the tests are not built" "$work/last.log" ||
  fail "configuring without Catch2 did not say that the tests are not built"
run "install without Catch2" cmake --install "$work/nocatch"
[[ -f "$work/nocatch-prefix/include/backprop/backprop.hpp" ]] ||
  fail "installing without Catch2 did not install the headers"
run "reconfigure without Catch2" cmake "$work/nocatch"
rm -rf "$work/nocatch" "$work/nocatch-prefix"

echo "== install to $prefix"
run "configure backprop" cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBACKPROP_BUILD_TESTS=OFF -DBACKPROP_BUILD_EXAMPLES=OFF "-DCMAKE_INSTALL_PREFIX=$prefix"
run "build backprop" cmake --build "$work/build" -j "$jobs"
run "install backprop" cmake --install "$work/build"

step="installed tree"
for f in include/backprop/backprop.hpp include/backprop/version.hpp \
  share/cmake/backprop/backprop-config.cmake \
  share/cmake/backprop/backprop-config-version.cmake \
  share/cmake/backprop/backprop-targets.cmake \
  share/pkgconfig/backprop.pc; do
  [[ -f "$prefix/$f" ]] || fail "the installed tree lacks $f"
done
# Every public header is installed, with the same layout (distributed/ with MPI only).
while IFS= read -r h; do
  rel=${h#"$src/"}
  [[ $have_mpi -eq 0 && "$rel" == include/backprop/distributed/* ]] && continue
  [[ -f "$prefix/$rel" ]] || fail "header $rel is not installed"
done < <(find "$src/include/backprop" -name '*.hpp')
mpi_targets="$prefix/share/cmake/backprop/backprop-mpi-targets.cmake"
if [[ $have_mpi -eq 1 && ! -f "$mpi_targets" ]]; then
  fail "MPI is installed but the tree lacks share/cmake/backprop/backprop-mpi-targets.cmake"
fi
# Header-only: nothing architecture-dependent may be installed.
if [[ -d "$prefix/lib" || -d "$prefix/lib64" || -d "$prefix/bin" ]]; then
  fail "a header-only install must not create lib/ or bin/: $(ls -d "$prefix"/lib* "$prefix"/bin 2>/dev/null)"
fi
echo "installed tree OK"

echo "== find_package consumer"
run "configure consumer" cmake -S "$here/consumer" -B "$work/consumer" \
  "-DCMAKE_PREFIX_PATH=$prefix" "-DEXPECTED_PREFIX=$prefix"
grep -q "^backprop_DIR:PATH=$prefix/share/cmake/backprop\$" "$work/consumer/CMakeCache.txt" ||
  fail "backprop_DIR is $(grep '^backprop_DIR' "$work/consumer/CMakeCache.txt"), expected $prefix/share/cmake/backprop"
step="plain consumer does not look for MPI"
if grep -q '^MPI' "$work/consumer/CMakeCache.txt"; then
  fail "find_package(backprop) without COMPONENTS looked for MPI: $(grep -m3 '^MPI' "$work/consumer/CMakeCache.txt")"
fi
run "build consumer" cmake --build "$work/consumer" -j "$jobs"
run "run consumer" "$work/consumer/app"
cat "$work/last.log"

echo "== find_package(backprop COMPONENTS mpi) consumer"
if [[ $have_mpi -eq 1 ]]; then
  mpiexec_flags=()
  if mpiexec --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
    mpiexec_flags+=(--oversubscribe)
    [[ $(id -u) -eq 0 ]] && mpiexec_flags+=(--allow-run-as-root)
  fi
  run "configure mpi consumer" cmake -S "$here/consumer_mpi" -B "$work/consumer-mpi" \
    "-DCMAKE_PREFIX_PATH=$prefix" "-DEXPECTED_PREFIX=$prefix"
  run "build mpi consumer" cmake --build "$work/consumer-mpi" -j "$jobs"
  run "run mpi consumer" timeout 120 mpiexec -n 2 "${mpiexec_flags[@]}" "$work/consumer-mpi/app"
  grep "backprop::mpi on 2 ranks" "$work/last.log" || fail "the mpi consumer printed no result"
  run "configure mpi consumer against the build tree" cmake -S "$here/consumer_mpi" \
    -B "$work/consumer-mpi-buildtree" "-Dbackprop_DIR=$work/build" "-DEXPECTED_PREFIX=$work/build"
  step="unknown component"
  if cmake -S "$here/consumer_mpi" -B "$work/consumer-mpi-bad" "-DCMAKE_PREFIX_PATH=$prefix" \
    -DBACKPROP_COMPONENTS=cuda >"$work/last.log" 2>&1; then
    fail "find_package(backprop COMPONENTS cuda) succeeded"
  fi
  grep -q "no component cuda" "$work/last.log" ||
    fail "find_package(backprop COMPONENTS cuda) failed without naming the component: $(tail -n 20 "$work/last.log")"
else
  echo "MPI is not installed (no mpicxx/mpiexec): checking that the component is reported missing"
  step="mpi component without MPI"
  [[ -f "$mpi_targets" ]] && fail "backprop-mpi-targets.cmake was installed although MPI is missing"
  if cmake -S "$here/consumer_mpi" -B "$work/consumer-mpi-none" "-DCMAKE_PREFIX_PATH=$prefix" \
    >"$work/last.log" 2>&1; then
    fail "find_package(backprop COMPONENTS mpi) succeeded without MPI"
  fi
  grep -q "built without MPI" "$work/last.log" ||
    fail "find_package(backprop COMPONENTS mpi) failed without saying why: $(tail -n 20 "$work/last.log")"
fi

# FetchContent from a git repository (this one, as a file:// URL at its HEAD commit).
if git -C "$src" rev-parse --verify HEAD >/dev/null 2>&1; then
  echo "== FetchContent consumer"
  rm -rf "$work/fetchcontent"
  run "configure fetchcontent" cmake -S "$here/fetchcontent" -B "$work/fetchcontent" \
    "-DBACKPROP_GIT=file://$src" "-DBACKPROP_GIT_TAG=$(git -C "$src" rev-parse HEAD)"
  run "build fetchcontent" cmake --build "$work/fetchcontent" -j "$jobs"
  run "run fetchcontent" "$work/fetchcontent/app"
  rm -rf "$work/fetchcontent"
else
  echo "note: $src is not a git repository; the FetchContent consumer is skipped"
fi

echo "== add_subdirectory consumer"
run "configure subdir" cmake -S "$here/subdir" -B "$work/subdir" "-DBACKPROP_SOURCE_DIR=$src"
run "build subdir" cmake --build "$work/subdir" -j "$jobs"
run "run subdir" "$work/subdir/app"
cat "$work/last.log"
step="subdir has no backprop tests"
if [[ -e "$work/subdir/backprop-build/tests" || -e "$work/subdir/backprop-build/examples" ]]; then
  fail "add_subdirectory built backprop's tests or examples"
fi
ntests=$(cd "$work/subdir" && ctest -N | sed -n 's/^Total Tests: //p')
[[ "${ntests:-0}" == 0 ]] || fail "add_subdirectory registered $ntests ctest tests of backprop"

echo "== pkg-config"
step="pkg-config"
command -v pkg-config >/dev/null || fail "pkg-config is not installed"
export PKG_CONFIG_PATH="$prefix/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
pkg-config --exists --print-errors backprop || fail "pkg-config does not find backprop"
version=$(pkg-config --modversion backprop)
expected_version=$(sed -n 's/^#define BACKPROP_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' \
  "$src/include/backprop/version.hpp" | paste -sd.)
[[ "$version" == "$expected_version" ]] || fail "backprop.pc says version $version, version.hpp $expected_version"
cflags=$(pkg-config --cflags backprop)
echo "pkg-config --cflags backprop: $cflags"
mkdir -p "$work/pkgconfig"
# shellcheck disable=SC2086  # cflags must split into words
run "pkg-config build" "${CXX:-c++}" $cflags -O1 "$here/consumer/main.cpp" -o "$work/pkgconfig/app"
run "run pkg-config build" "$work/pkgconfig/app"
cat "$work/last.log"
step="pkg-config include path"
incdir=""
for flag in $cflags; do
  if [[ "$flag" == -I* && -f "${flag#-I}/backprop/backprop.hpp" ]]; then
    incdir=$(cd "${flag#-I}" && pwd -P)
  fi
done
[[ "$incdir" == "$(cd "$prefix/include" && pwd -P)" ]] ||
  fail "pkg-config --cflags does not point to $prefix/include: $cflags"

echo "== build-tree export (backprop_DIR=<build dir>)"
run "configure consumer against the build tree" cmake -S "$here/consumer" \
  -B "$work/consumer-buildtree" "-Dbackprop_DIR=$work/build" "-DEXPECTED_PREFIX=$work/build"

echo "== relocated prefix"
mv "$prefix" "$work/moved"
run "configure consumer against the moved prefix" cmake -S "$here/consumer" \
  -B "$work/consumer-moved" "-DCMAKE_PREFIX_PATH=$work/moved" "-DEXPECTED_PREFIX=$work/moved"
step="pkg-config with the moved prefix"
moved_cflags=$(PKG_CONFIG_PATH="$work/moved/share/pkgconfig" pkg-config --cflags backprop)
[[ -f "$work/moved/share/pkgconfig/../../include/backprop/backprop.hpp" && \
  "$moved_cflags" == *"$work/moved/"* ]] ||
  fail "backprop.pc is not relocatable: --cflags gives $moved_cflags after moving the prefix"
mv "$work/moved" "$prefix"

step=""
echo "package tests passed"
