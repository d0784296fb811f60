#!/usr/bin/env bash
# fuzz-run.sh BUILD SECONDS — runs every libFuzzer target for a bounded time on its corpus.
# Corpus seeds live in fuzz/corpus/<target>/ (read-only here: new inputs go to a temp dir),
# dictionaries in fuzz/<target>.dict. Any crash fails the run and leaves the input in the log.
set -euo pipefail
build=${1:-build-fuzz}; secs=${2:-20}
cd "$(dirname "$0")/.."
status=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=${bin##*/fuzz_}
  work=$(mktemp -d)
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 -artifact_prefix="$work/")
  [ -f "fuzz/$name.dict" ] && args+=(-dict="fuzz/$name.dict")
  dirs=("$work")
  [ -d "fuzz/corpus/$name" ] && dirs+=("fuzz/corpus/$name")
  if "$bin" "${args[@]}" "${dirs[@]}" >"$work/log" 2>&1; then
    echo "fuzz $name: ok ($(grep -c '' "$work/log") log lines, ${secs}s)"
  else
    echo "fuzz $name: FAILED"; tail -40 "$work/log"; ls "$work"; status=1
  fi
  rm -rf "$work"
done
exit $status
