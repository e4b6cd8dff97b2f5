#!/usr/bin/env bash
# Provides scikit-learn's small tabular data sets (breast cancer, iris, wine: CSV with the
# class in the last column; diabetes: gzip-compressed, space-separated features and a
# separate targets file) from the Debian package python3-sklearn, copied into a cache
# directory and checked against SHA-256 sums. Idempotent: verified files are left alone.
#
# The files are taken from an installed python3-sklearn if there is one; otherwise the
# package is downloaded (apt-get download) and unpacked into a temporary directory, so
# neither scikit-learn nor its dependencies get installed.
#
# Usage: scripts/fetch_sklearn_data.sh [DIR]
#   DIR defaults to $BACKPROP_DATA_DIR/sklearn if BACKPROP_DATA_DIR is set, else
#   <repo>/.cache/data/sklearn. Prints the directory on the last line.
set -euo pipefail

readonly PACKAGE="python3-sklearn"
readonly SUBDIR="usr/lib/python3/dist-packages/sklearn/datasets/data"
declare -A SHA256=(
  [breast_cancer.csv]=fed3eb72d0575ef6192293f5093c6e801b1476b577d0386bf4455504522172ed
  [iris.csv]=f13ffa8fdd56fd8e6c8d16d4081a3fbd3114bcd0aae4256c43205169cd9d1449
  [wine_data.csv]=10e8a802908b34f86e5da8ce962f3c806694bc98450a18f61851af59f324bede
  [diabetes_data_raw.csv.gz]=fc08fc59c1cbfe65550d9ebb36321d505de9e8f004bf92c1566d2908962f08ff
  [diabetes_target.csv.gz]=bf1ddd1f9d377278450a5f02c24b5e77b1501f2ad673fe9fdf4c4090d27eb5cc
)
readonly FILES=(breast_cancer.csv iris.csv wine_data.csv diabetes_data_raw.csv.gz
                diabetes_target.csv.gz)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ge 1 ]]; then
  dest="$1"
elif [[ -n "${BACKPROP_DATA_DIR:-}" ]]; then
  dest="$BACKPROP_DATA_DIR/sklearn"
else
  dest="$repo/.cache/data/sklearn"
fi

sum_ok() {  # FILE EXPECTED
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

all_in() {  # DIR
  local f
  for f in "${FILES[@]}"; do
    sum_ok "$1/$f" "${SHA256[$f]}" || return 1
  done
}

if all_in "$dest"; then
  echo "The scikit-learn data sets are already in $dest (sha256 verified); nothing to do."
  echo "$dest"
  exit 0
fi

src="/$SUBDIR"
tmp=""
cleanup() { if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
if ! all_in "$src"; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $src is missing and apt-get is not available; install $PACKAGE" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  echo "Downloading the Debian package $PACKAGE (not installing it) ..."
  if ! (cd "$tmp" && apt-get download "$PACKAGE" >/dev/null 2>&1); then
    if [[ "$(id -u)" -eq 0 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null
    fi
    (cd "$tmp" && apt-get download "$PACKAGE" >/dev/null) || {
      echo "error: 'apt-get download $PACKAGE' failed (offline?)" >&2
      exit 1
    }
  fi
  dpkg-deb -x "$tmp"/"${PACKAGE}"_*.deb "$tmp/root"
  src="$tmp/root/$SUBDIR"
fi

mkdir -p "$dest"
for f in "${FILES[@]}"; do
  if ! sum_ok "$src/$f" "${SHA256[$f]}"; then
    echo "error: $src/$f is missing or has an unexpected sha256:" >&2
    sha256sum "$src/$f" >&2 || true
    exit 1
  fi
  cp "$src/$f" "$dest/.$f.part"
  mv -f "$dest/.$f.part" "$dest/$f"
  echo "  $f  ok"
done

echo "The scikit-learn data sets are ready in $dest"
echo "$dest"
