#!/usr/bin/env bash
# Writes the seed corpus of fuzz_csv_load (tests/fuzz/corpus/fuzz_csv_load): byte 0 is
# the mode (fuzz_csv_load.cpp: bits 0-2 the columns' roles or the Scaler / class-names
# reader, 3-4 the delimiter, 5 the header, 6-7 the missing-value mode), byte 1 where the
# data file ends and the separate targets file starts (mode 5), then the contents.
# Usage: bash tests/fuzz/make_csv_seeds.sh
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/corpus/fuzz_csv_load"
mkdir -p "$out"
seed() {  # NAME MODE SPLIT CONTENT (printf format)
  { printf "\\x$(printf %02x "$2")\\x$(printf %02x "$3")"; printf "$4"; } >"$out/$1"
}
seed labels_last 0 0 '1.5,2,0\n3,4.25,1\n-1e3,+7,2\n'
seed labels_first 1 0 '0,1,2\n1,3,4\n'
seed header_text_labels 32 0 'a,b,species\n5.1,3.5,setosa\n6.2,2.9,"versi,color"\n'
seed regression_last 2 0 '1 2 3.5\n4 5 6.5\n'
seed regression_two_ignored 3 0 '1;9;2;3\n4;9;5;6\n'
seed named_label_ignored 4 0 'id,x,class\n7,0.5,"a ""b"""\n8,NA,c\n'
seed separate_targets 5 16 '1,2\n3,4\n5,6\n7,8\n10\n20\n30\n40\n'
seed skip_missing 64 0 '1,,0\n2,3,1\n4,?,0\n5,6,1\n'
seed fill_missing 128 0 '1,NA,0\n2,3,1\r\n'
seed scaler 7 0 'backprop-scaler 1\nstandard 2\n0.5 2 0\n-1 0.25 0\n'
seed class_names 6 0 'backprop-class-names 1\n3\n6 setosa\n10 versicolor\n3 a\nb\n'
# A gzip-compressed file (load_csv reads gzip by its magic bytes).
{ printf '\x00\x00'; printf '1,2,0\n3,4,1\n' | gzip -9n; } >"$out/gzip"
ls "$out"
