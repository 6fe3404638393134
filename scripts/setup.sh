#!/usr/bin/env bash
# Installs what the collection needs on Debian 12 (only what is missing) and
# builds every plugin in release. Idempotent; quiet when already set up.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  pkg-config build-essential nasm protobuf-compiler meson
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice
  espeak-ng sox python3 python3-venv python3-pip
  postgresql redis-server chromium libdav1d-dev ffmpeg xvfb
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node may come from another source than Debian (whose npm then conflicts): look for the command.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust 1.95 or newer is needed (rustup); cargo is not on PATH" >&2
  exit 1
fi
# The test command gates on rustfmt and clippy (rustup's components of the same toolchain).
for tool in fmt clippy; do
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    component=$([ "$tool" = fmt ] && echo rustfmt || echo clippy)
    echo "setup: installing the $component component"
    rustup component add "$component" || { echo "setup: cargo $tool is needed: rustup component add $component" >&2; exit 1; }
  fi
done

# Python packages: the tests' real peers (python-requirements.txt) and packages
# wanted only for the files they ship (python-nodeps.txt, installed --no-deps).
wanted="$(cat scripts/python-requirements.txt scripts/python-nodeps.txt)"
stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing Python packages into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/python-requirements.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r scripts/python-nodeps.txt
  printf '%s' "$wanted" > "$stamp"
fi

# Real inference peers for inferclient's tests, and moto's S3 server for cliprecorder's,
# each in its own venv (their pins conflict).
for peer in mlserver runpod moto aiortc; do
  wanted="$(cat "scripts/peers-$peer.txt")"
  stamp=".venv-$peer/.requirements-installed"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "setup: installing the $peer test peer into .venv-$peer"
    [ -x ".venv-$peer/bin/python" ] || python3 -m venv ".venv-$peer"
    ".venv-$peer/bin/pip" install -q --disable-pip-version-check -r "scripts/peers-$peer.txt"
    printf '%s' "$wanted" > "$stamp"
  fi
done

# The dashboard test drives Debian's chromium through playwright-core (no browser download).
dashboard=plugins/rtai-analytics/tests/dashboard
if [ ! -d "$dashboard/node_modules/playwright-core" ]; then
  echo "setup: installing playwright-core for the dashboard test"
  npm ci --silent --prefix "$dashboard" >/dev/null
fi
# abrsink's player page serves hls.js and dash.js from here; its browser test drives chromium
# through playwright-core.
player=plugins/rtai-live/tests/player
if [ ! -d "$player/node_modules/hls.js" ] || [ ! -d "$player/node_modules/dashjs" ]; then
  echo "setup: installing hls.js, dash.js and playwright-core for abrsink"
  npm ci --silent --prefix "$player" >/dev/null
fi
# webrtcserve's browser test drives chromium through playwright-core.
webrtc_browser=plugins/rtai-webrtc/tests/browser
if [ ! -d "$webrtc_browser/node_modules/playwright-core" ]; then
  echo "setup: installing playwright-core for webrtcserve's browser test"
  npm ci --silent --prefix "$webrtc_browser" >/dev/null
fi

cargo build --release --workspace --quiet
