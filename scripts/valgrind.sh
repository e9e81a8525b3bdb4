#!/usr/bin/env bash
# Run the Rust kernel tests under valgrind's memcheck: any invalid read/write, use of
# uninitialised memory or definite leak fails. Not part of CI (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo test --release --lib --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
tests = [m["executable"] for m in map(json.loads, sys.stdin) if m.get("profile", {}).get("test")]
print(tests[-1])')
valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  "$bin" --test-threads=1 kernels::
