#!/usr/bin/env bash
# Memory of a training call on W5 and W5v, unroll against PyTorch, in one
# command: bench/memory.sh [memory.py options: --calls N, --threads 1,2, --workloads W5]
#
#  1. the virtualenv at bench/.venv, as bench/run.sh makes it, with what this
#     needs: numpy, safetensors, torch (the same version ranges as run.sh)
#  2. the W5/W5v data (bench/workloads.py --check: the training references
#     against finite differences)
#  3. rnn-bench's memory_unroll (release)
#  4. bench/memory.py: the bytes kept for the backward and the peak resident
#     memory of processes making 0, 1 or N training calls, as Markdown tables
#     on stdout
#
# Knobs (environment): BENCH_NO_INSTALL=1 to skip pip. Progress goes to stderr.
set -u -o pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$BENCH/.venv"
PY="$VENV/bin/python"
START=$(date +%s)

log() { echo "[memory $(($(date +%s) - START))s] $*" >&2; }

# --- 1. Python environment --------------------------------------------------
if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV" || { log "python3 -m venv failed"; exit 1; }
    "$PY" -m pip install -q --disable-pip-version-check --upgrade pip >&2
fi
if [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    for pkg in "numpy>=1.26,<3" "safetensors>=0.4,<1" "torch>=2.3,<3"; do
        log "pip install $pkg"
        "$PY" -m pip install -q --disable-pip-version-check "$pkg" >&2 ||
            { log "required package $pkg failed"; exit 1; }
    done
fi

# --- 2. Data -------------------------------------------------------------------
log "generating the W5/W5v data"
"$PY" "$BENCH/workloads.py" --workloads W5,W5v --check || { log "data generation failed"; exit 1; }

# --- 3. Build --------------------------------------------------------------------
log "building rnn-bench's memory_unroll"
(cd "$ROOT" && cargo build --release --quiet -p rnn-bench --bin memory_unroll >&2) ||
    { log "cargo build -p rnn-bench --bin memory_unroll failed"; exit 1; }

# --- 4. Measurements -------------------------------------------------------------
read -r LOAD _ </proc/loadavg
log "load average: $LOAD (memory figures do not depend on it)"
"$PY" "$BENCH/memory.py" "$@" || { log "memory.py failed"; exit 1; }
log "total $(($(date +%s) - START))s"
