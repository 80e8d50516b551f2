#!/usr/bin/env bash
# Builds the capsule for wasm32-unknown-unknown and copies the module next to Capsule.toml.
# Needs the target: rustup target add wasm32-unknown-unknown.
# CARGO_TARGET_DIR chooses where cargo builds (default: ./target, ignored by git).
set -euo pipefail
cd "$(dirname "$0")"
target_dir="${CARGO_TARGET_DIR:-target}"
# Source paths end up in panic messages: name them from the examples folder, not from this
# machine's root, so that the module is the same wherever it is built.
capsules="$(cd .. && pwd)"
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$capsules=capsules"
cargo build --release --target wasm32-unknown-unknown --target-dir "$target_dir"
cp "$target_dir/wasm32-unknown-unknown/release/guard.wasm" guard.wasm
echo "guard.wasm: $(wc -c < guard.wasm) bytes"
