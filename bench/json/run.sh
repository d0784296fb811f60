#!/usr/bin/env bash
# bench/json/run.sh — build bench.c once per JSON library with gcc -O2, run each,
# and print the Markdown tables used in docs/JSON-CHOICE.md.
#   bench/json/run.sh [seconds-per-measurement]      (default 0.3; results vary with the machine)
# Needs libcjson-dev, libjansson-dev, libjson-c-dev (Debian 12).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
secs="${1:-0.3}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cc="gcc -std=c17 -O2 -D_GNU_SOURCE -Wall -Wextra"
$cc -DBENCH_CJSON   "$here/bench.c" -o "$out/bench-cjson"   $(pkg-config --cflags --libs libcjson)
$cc -DBENCH_JANSSON "$here/bench.c" -o "$out/bench-jansson" $(pkg-config --cflags --libs jansson)
$cc -DBENCH_JSONC   "$here/bench.c" -o "$out/bench-jsonc"   $(pkg-config --cflags --libs json-c)

for lib in cjson jansson jsonc; do "$out/bench-$lib" "$secs"; done > "$out/results.tsv"

echo "Machine: $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') ($(nproc) CPUs); gcc $(gcc -dumpversion) -O2; ${secs}s per measurement, best of 5"
echo
echo "| Workload (bytes) | Operation | Library | ops/s | MB/s | allocs/op | bytes allocated/op | output = input |"
echo "|---|---|---|---:|---:|---:|---:|---|"
awk -F'\t' '$1=="row" { printf "| %s (%s) | %s | %s %s | %d | %s | %d | %d | %s |\n", $4, $6, $5, $2, $3, $8, $9, $10, $11, $12 }' "$out/results.tsv"
echo
echo "| Probe | cJSON | jansson | json-c |"
echo "|---|---|---|---|"
awk -F'\t' '$1=="feature" { v[$3 SUBSEP $2] = $4; if (!($3 in seen)) { seen[$3] = 1; order[n++] = $3 } }
  END { for (i = 0; i < n; i++) { p = order[i]; printf "| %s | %s | %s | %s |\n", p, v[p SUBSEP "cJSON"], v[p SUBSEP "jansson"], v[p SUBSEP "json-c"] } }' "$out/results.tsv"
