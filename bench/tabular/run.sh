#!/usr/bin/env bash
# backprop's tabular examples against scikit-learn's MLP on the same splits.
#
# Usage: bash bench/tabular/run.sh [SEEDS]
# Fetches the data (scripts/fetch_sklearn_data.sh), builds examples/08_tabular,
# examples/09_regression and bench/tabular/splits.cpp with g++ -O2, runs the examples on
# the four data sets, writes their splits, and runs bench/tabular/sklearn_mlp.py on them
# (needs Debian's python3-sklearn; installed with apt-get when run as root).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seeds=${1:-5}
data=$(bash "$repo/scripts/fetch_sklearn_data.sh" | tail -n 1)
if ! /usr/bin/python3 -c "import sklearn" 2>/dev/null; then
  if [[ "$(id -u)" -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-sklearn >/dev/null
  else
    echo "error: install python3-sklearn (sudo apt-get install python3-sklearn)" >&2
    exit 1
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-std=c++20 -O2 -I"$repo/include" -I/usr/include/eigen3)
for p in examples/08_tabular examples/09_regression bench/tabular/splits; do
  g++ "${flags[@]}" "$repo/$p.cpp" -o "$work/$(basename "$p")" &
done
wait
cd "$work"
echo "backprop (examples/08_tabular, examples/09_regression; one seed):"
for f in breast_cancer iris wine_data; do
  line=$(./08_tabular "$data/$f.csv" | grep -E '^ +accuracy')
  echo "  $f: test accuracy $(awk '{printf "%.2f%%", 100 * $2}' <<<"$line") of $(awk '{print $3}' <<<"$line")"
done
echo "  diabetes: $(./09_regression "$data" | grep '^test:')"
./splits "$data" "$work"
echo "scikit-learn $(/usr/bin/python3 -c 'import sklearn; print(sklearn.__version__)') MLP, same splits and settings:"
/usr/bin/python3 "$repo/bench/tabular/sklearn_mlp.py" "$work" "$seeds" | sed 's/^/  /'
