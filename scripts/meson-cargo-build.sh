#!/usr/bin/env bash
# Called by meson.build: cargo build --release, then copy the plugins to meson's output dir.
set -euo pipefail
src="$1"; out="$2"; shift 2
# CARGO_TARGET_DIR lets a caller reuse an existing build (the tests do).
target="${CARGO_TARGET_DIR:-$out/cargo-target}"
cargo build --release --workspace --manifest-path "$src/Cargo.toml" --target-dir "$target"
for lib in "$@"; do
  cp "$target/release/$lib" "$out/$lib"
done
