#!/usr/bin/env bash
# The main job (README command one): bash scripts/run.sh [example options]
#
# Installs what is missing (Debian 12, as root), fetches MNIST into
# .cache/data/mnist, builds examples/02_mnist.cpp in build/release and trains the
# book's chapter-1 network (784-30-10, 30 epochs, mini-batch 10, eta 3.0),
# printing the test accuracy per epoch. Writes out/mnist-history.csv,
# out/mnist-chart.svg and out/mnist-weights.png. Extra arguments go to the
# example (see --help), e.g. --dataset fashion-mnist or --epochs 5.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages cmake g++ make libeigen3-dev ca-certificates npm

dataset=mnist
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ "${args[$i]}" == --dataset ]]; then dataset=${args[$((i + 1))]:-mnist}; fi
done
case "$dataset" in
  mnist) bash scripts/fetch_mnist.sh ;;
  fashion | fashion-mnist) dataset=fashion-mnist; bash scripts/fetch_fashion_mnist.sh ;;
  *) echo "error: --dataset must be mnist or fashion-mnist" >&2; exit 2 ;;
esac

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBACKPROP_BUILD_TESTS=OFF \
  -DBACKPROP_VERIFY_HEADERS=OFF >/dev/null
cmake --build build/release -j 2 --target example_02_mnist
mkdir -p out
exec build/release/examples/example_02_mnist --data ".cache/data/$dataset" \
  --history "out/$dataset-history.csv" --chart "out/$dataset-chart.svg" \
  --tiles "out/$dataset-weights.png" "$@"
