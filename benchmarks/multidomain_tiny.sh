#!/bin/bash
# Usage: bash benchmarks/multidomain_tiny.sh [WORKDIR]   (results quoted in BENCHMARKS.md)
# Tiny presets of the multi-domain families on the gradings sample task, then eval.
set -e
cd "$(dirname "$0")/.."
B=${1:-/tmp/i2i-multidomain-tiny}; mkdir -p "$B"
lscpu | grep "Model name"
.venv/bin/i2i data sample --task gradings --out "$B"/data
for f in twostep stargan; do
  /usr/bin/time -f "$f-tiny: %e s wall, %M KB peak RSS" .venv/bin/i2i-train --config $f-tiny --data "$B"/data --out "$B"/$f --no-progress 2>&1 | tail -2
  .venv/bin/i2i eval "$B"/$f --data "$B"/data --out "$B"/$f-eval 2>&1 | tail -30
done
