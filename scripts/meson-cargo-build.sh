#!/usr/bin/env bash
# Called by meson.build: cargo build --release into the workspace's own target/
# (the tree `cargo build --release --workspace` fills, so meson adds no second
# release build), then copy the plugins to meson's output dir.
#
# Usage: meson-cargo-build.sh <source root> <meson output dir> <cargo> <lib>...
#
# `sudo meson install` rebuilds stale targets first, as root. Cargo must not
# run as root then: it would use root's toolchain and leave root-owned files
# in the user's target/. Under sudo the build runs as the user who called sudo.
set -euo pipefail
src="$1"; out="$2"; cargo="$3"; shift 3
target="${CARGO_TARGET_DIR:-$src/target}"
build=("$cargo" build --release --workspace --manifest-path "$src/Cargo.toml" --target-dir "$target")
if [ "$(id -u)" = 0 ] && [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ]; then
  home="$(getent passwd "$SUDO_UID" | cut -d: -f6)"
  echo "meson-cargo-build: running cargo as uid $SUDO_UID (not root) under sudo" >&2
  setpriv --reuid="$SUDO_UID" --regid="${SUDO_GID:-$SUDO_UID}" --init-groups \
    env HOME="$home" USER="${SUDO_USER:-}" LOGNAME="${SUDO_USER:-}" "${build[@]}"
else
  "${build[@]}"
fi
for lib in "$@"; do
  cp "$target/release/$lib" "$out/$lib"
done
