#!/usr/bin/env bash
# Fuzz the kernels with cargo-fuzz (libFuzzer + AddressSanitizer; targets in fuzz/fuzz_targets/),
# corpus-free: each target starts from an empty temporary corpus, and the time (default 60 s in
# all) is split evenly between the targets. Not part of CI. A failure leaves its input in
# fuzz/artifacts/<target>/; replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`
# from fuzz/. Needs `cargo install cargo-fuzz`; RUSTC_BOOTSTRAP=1 lets a stable rustc accept the
# nightly-only flags cargo-fuzz passes (-Zsanitizer=address).
# Usage: scripts/fuzz_cargo.sh [seconds] [target...]   (targets: softmax cross_entropy binary)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(softmax cross_entropy binary); fi
per=$((seconds / ${#targets[@]}))
[ "$per" -ge 1 ] || per=1
export RUSTC_BOOTSTRAP=1
cargo fuzz build
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
failed=()
for target in "${targets[@]}"; do
    echo "=== $target: ${per} s"
    mkdir -p "$corpus/$target"
    if ! cargo fuzz run "$target" "$corpus/$target" -- -max_total_time="$per" -print_final_stats=1; then
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz_cargo: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz_cargo: ${targets[*]}: nothing found in ${seconds} s"
