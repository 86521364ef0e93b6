#!/usr/bin/env bash
# Lines of generated code and `cargo build --release` time of a crate
# holding one 1-layer LSTM (I=32, H=64), static N for several N against
# dynamic: the inference code (`rnnc emit`) and, next to it, the same model
# with its training code (`rnnc emit --gradients`).
# Usage: bench/codegen_size.sh [N...]   (default: 10 50 100 500)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/codegen-size"
steps=("${@:-10 50 100 500}")
[ $# -eq 0 ] && steps=(10 50 100 500)
mkdir -p "$work"
cargo build --release -q -p rnn-dsl --bin rnnc --manifest-path "$root/Cargo.toml"
rnnc="$root/target/release/rnnc"

cat > "$work/model.rnn" <<'MODEL'
network Lstm {
    input x: [32];
    layer rnn = lstm(hidden = 64);
    unroll dynamic;
}
MODEL

crate="$work/crate"
mkdir -p "$crate/src"
cat > "$crate/Cargo.toml" <<TOML
[package]
name = "codegen-size"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rnn-runtime = { path = "$root/rnn-runtime" }

[workspace]
TOML
# Build the dependencies once, so each timing is the generated code alone.
echo "pub fn nothing() {}" > "$crate/src/lib.rs"
CARGO_TARGET_DIR="$work/target" cargo build --release -q --manifest-path "$crate/Cargo.toml"

# Emits the model in mode $1 (with the extra options after it), builds the
# crate, prints "lines seconds".
measure() {
    local text="$1"
    shift
    "$rnnc" emit "$work/model.rnn" --mode "$text" "$@" -o "$crate/src/lib.rs"
    local lines start end
    lines=$(wc -l < "$crate/src/lib.rs")
    start=$(date +%s.%N)
    CARGO_TARGET_DIR="$work/target" cargo build --release -q --manifest-path "$crate/Cargo.toml"
    end=$(date +%s.%N)
    awk -v l="$lines" -v s="$start" -v e="$end" 'BEGIN { printf "%s %.1f", l, e - s }'
}

printf '%-12s %10s %10s %14s %18s\n' "mode" "lines" "build (s)" "lines, --grad" "build (s), --grad"
for mode in dynamic "${steps[@]}"; do
    if [ "$mode" = dynamic ]; then text="dynamic"; else text="static $mode"; fi
    read -r lines secs <<<"$(measure "$text")"
    read -r glines gsecs <<<"$(measure "$text" --gradients)"
    printf '%-12s %10s %10s %14s %18s\n' "$text" "$lines" "$secs" "$glines" "$gsecs"
done
