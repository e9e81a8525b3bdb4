#!/usr/bin/env bash
# Fuzz the kernels for a while (default 60 s): random shapes, layouts, special values and
# targets, checked against a naive f64 computation. Not part of CI. Usage: scripts/fuzz.sh [seconds] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --example fuzz_kernels -- "${1:-60}" "${2:-$RANDOM$RANDOM}"
