#!/usr/bin/env bash
# The release wheel for Linux x86_64: abi3 (one wheel for CPython >= 3.10) and manylinux2014
# (glibc >= 2.17). zig is the linker, so the wheel links against glibc 2.17's symbols from any
# host (a plain `pip wheel .` on this Debian 12 machine gives a linux_x86_64 wheel that needs
# glibc 2.34). No target-cpu flags: AVX2+FMA are detected at run time.
# Usage: scripts/build_wheels.sh [more maturin build options]   (wheels land in dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q 'maturin>=1.9.4,<2' ziglang
maturin build --release --zig --compatibility manylinux2014 --out dist "$@"
