#!/usr/bin/env bash
# Builds the Rust capsule in folder $1 (default: this folder's capsule that called it) for
# wasm32-unknown-unknown and copies its module next to its Capsule.toml.
# Needs the target: rustup target add wasm32-unknown-unknown.
# CARGO_TARGET_DIR chooses where cargo builds (default: <capsule>/target, ignored by git).
set -euo pipefail
cd "${1:?usage: build.sh CAPSULE_DIR}"
target_dir="${CARGO_TARGET_DIR:-target}"
# The module is named after the package, with `-` as `_`.
package="$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
module="${package//-/_}.wasm"
# Source paths end up in panic messages: name them from the examples folder, not from this
# machine's root, so that the module is the same wherever it is built.
capsules="$(cd .. && pwd)"
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$capsules=capsules"
cargo build --release --target wasm32-unknown-unknown --target-dir "$target_dir"
cp "$target_dir/wasm32-unknown-unknown/release/$module" "$module"
echo "$module: $(wc -c < "$module") bytes"
