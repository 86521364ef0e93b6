#!/usr/bin/env bash
# The workloads' matrix products, one thread, in one command: bench/gemm.sh
#
# unroll's packed GEMM against ndarray's general_mat_mul (matrixmultiply), the
# gemm crate and OpenBLAS, on each product shape of shared/WORKLOADS.md
# (bench/gemm-peers/src/main.rs). Installs Debian's libopenblas-dev first if
# the system has no OpenBLAS (as root; otherwise it says what to install).
# Prints a Markdown table; about 10 seconds of timing after a first build of
# about a minute.
set -eu -o pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! ldconfig -p | grep -q 'libopenblas\.so '; then
    if [ "$(id -u)" = 0 ]; then
        echo "[gemm] installing libopenblas-dev" >&2
        apt-get install -y -q libopenblas-dev >&2
    else
        echo "[gemm] OpenBLAS is missing: install libopenblas-dev (Debian) and run again" >&2
        exit 1
    fi
fi
echo "[gemm] building bench/gemm-peers" >&2
cargo build --release --quiet --manifest-path "$BENCH/gemm-peers/Cargo.toml"
echo "[gemm] load average before timing: $(cut -d' ' -f1 /proc/loadavg)" >&2
"$BENCH/gemm-peers/target/release/gemm-peers"
