#!/usr/bin/env bash
# The side-by-side benchmark, in one command: bench/run.sh
#
#  1. a virtualenv at bench/.venv with the Python peers, each package installed
#     on its own so that one that fails (TensorFlow, say) does not stop the rest
#  2. the workload data and ONNX models (bench/workloads.py --check: every ONNX
#     export is verified against the numpy reference, or the run stops)
#  3. builds: bench/rust-peers (tract, candle) and, if the workspace has it,
#     unroll's rnn-bench, all before any timing starts
#  4. timings: peers.py (ONNX Runtime, PyTorch, TensorFlow, JAX), lista.py (W6:
#     PyTorch, JAX), rust-peers,
#     unroll's bench_unroll, at 1 and 2 threads
#  5. all JSON lines to target/bench-results.jsonl, the Markdown table to stdout
#
# Knobs (environment): BENCH_THREADS (default 1,2), BENCH_REPS (default 7),
# BENCH_SYSTEMS (peers.py systems, default all), BENCH_NO_INSTALL=1 to skip pip.
# Progress goes to stderr.
set -u -o pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$BENCH/.venv"
PY="$VENV/bin/python"
RESULTS="$ROOT/target/bench-results.jsonl"
THREADS="${BENCH_THREADS:-1,2}"
REPS="${BENCH_REPS:-7}"
SYSTEMS="${BENCH_SYSTEMS:-onnxruntime,pytorch,tensorflow,jax}"
START=$(date +%s)

log() { echo "[bench $(($(date +%s) - START))s] $*" >&2; }
# An error line in the results schema, for a step that could not run at all.
error_line() { printf '{"system": "%s", "error": "%s"}\n' "$1" "$2" >>"$RESULTS.part"; }

mkdir -p "$ROOT/target"
: >"$RESULTS.part"

# --- 1. Python environment --------------------------------------------------
if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV" || { log "python3 -m venv failed"; exit 1; }
    "$PY" -m pip install -q --disable-pip-version-check --upgrade pip >&2
fi
# Needed to make the data at all: a failure here stops the run.
CORE=("numpy>=1.26,<3" "safetensors>=0.4,<1" "onnx>=1.16,<2" "onnxruntime>=1.18,<2" "threadpoolctl>=3,<4")
# Peers: any of these may fail; peers.py then reports an error line for it.
PEERS=("torch>=2.3,<3" "tensorflow-cpu>=2.16,<3" "jax[cpu]>=0.4.30,<1")
if [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    for pkg in "${CORE[@]}" "${PEERS[@]}"; do
        log "pip install $pkg"
        if ! "$PY" -m pip install -q --disable-pip-version-check "$pkg" >&2; then
            case "$pkg" in
            tensorflow-cpu*)
                log "tensorflow-cpu failed; trying tensorflow"
                "$PY" -m pip install -q --disable-pip-version-check "tensorflow>=2.16,<3" >&2 ||
                    log "tensorflow could not be installed (peers.py will report it)"
                ;;
            numpy* | safetensors* | onnx*) log "required package $pkg failed"; exit 1 ;;
            *) log "$pkg could not be installed (peers.py will report it)" ;;
            esac
        fi
    done
fi

# --- 2. Data -----------------------------------------------------------------
log "generating workload data and checking the ONNX exports"
"$PY" "$BENCH/workloads.py" --check || { log "data generation / ONNX check failed"; exit 1; }
log "W6 (LISTA-CP) data and its float64 reference"
"$PY" "$BENCH/lista.py" --make-data || { log "W6 data generation failed"; exit 1; }

# --- 3. Builds (before any timing, so that compiling never overlaps it) -----
RUST_PEERS="$BENCH/rust-peers/target/release/rust-peers"
log "building bench/rust-peers (the first build compiles tract and candle: minutes)"
if ! cargo build --release --quiet --manifest-path "$BENCH/rust-peers/Cargo.toml" >&2; then
    error_line "tract/candle (rust-peers)" "cargo build failed"
    RUST_PEERS=""
fi
HAVE_UNROLL=0
if (cd "$ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null) |
    "$PY" -c 'import json,sys; sys.exit(0 if any(p["name"]=="rnn-bench" for p in json.load(sys.stdin)["packages"]) else 1)'; then
    log "building unroll's rnn-bench"
    if (cd "$ROOT" && cargo build --release --quiet -p rnn-bench --bin bench_unroll >&2); then
        HAVE_UNROLL=1
    else
        error_line "unroll" "cargo build -p rnn-bench --bin bench_unroll failed"
    fi
else
    log "no rnn-bench package in the workspace: unroll not measured"
fi

# --- 4. Timings --------------------------------------------------------------
read -r LOAD _ </proc/loadavg
log "load average before timing: $LOAD (2 cores; other work on the machine distorts the figures)"

# numpy/torch benchmark commands run without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE
# (they slow a current numpy; see the environment notes) - in this command only.
log "peers.py: $SYSTEMS at threads $THREADS"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    "$PY" "$BENCH/peers.py" --systems "$SYSTEMS" --threads "$THREADS" --reps "$REPS" >>"$RESULTS.part" ||
    error_line "peers.py" "exited with status $?"

# W6 has its own peers (a PyTorch module and a JAX function of LISTA-CP's algebra).
LISTA_SYSTEMS=$(echo "$SYSTEMS" | tr ',' '\n' | grep -E '^(pytorch|jax)$' | paste -sd, -)
if [ -n "$LISTA_SYSTEMS" ]; then
    log "lista.py (W6): $LISTA_SYSTEMS at threads $THREADS"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        "$PY" "$BENCH/lista.py" --systems "$LISTA_SYSTEMS" --threads "$THREADS" --reps "$REPS" >>"$RESULTS.part" ||
        error_line "lista.py" "exited with status $?"
fi

if [ -n "$RUST_PEERS" ]; then
    for t in ${THREADS//,/ }; do
        log "rust-peers (tract, candle) at $t thread(s)"
        "$RUST_PEERS" --threads "$t" --reps "$REPS" >>"$RESULTS.part" ||
            error_line "tract/candle (rust-peers)" "exited with status $? at $t thread(s)"
    done
fi

if [ "$HAVE_UNROLL" = 1 ]; then
    log "unroll: bench_unroll --json"
    (cd "$ROOT" && cargo run --release --quiet -p rnn-bench --bin bench_unroll -- --json) >>"$RESULTS.part" ||
        error_line "unroll" "bench_unroll exited with status $?"
fi

# --- 5. Results ----------------------------------------------------------------
mv "$RESULTS.part" "$RESULTS"
log "raw lines: $RESULTS ($(wc -l <"$RESULTS") lines); total $(($(date +%s) - START))s"
python3 "$BENCH/table.py" "$RESULTS"
