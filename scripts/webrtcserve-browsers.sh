#!/usr/bin/env bash
# webrtcserve in Debian's chromium with more viewers and longer measuring
# windows than the CI test: 8 viewers (or $1, as in CI), 5 s fps windows (or $2).
# Prints each step's JSON (first frame after page open, fps per viewer,
# rejoin, a frozen viewer and the others' fps). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p gst-plugin-rtai-webrtc -p gst-plugin-rtai-encode
RTAI_WEBRTC_CHROMIUM_VIEWERS="${1:-8}" RTAI_WEBRTC_CHROMIUM_WINDOW_MS="${2:-5000}" \
  cargo test --release -p gst-plugin-rtai-webrtc --test webrtcserve -- \
  chromium_viewers --nocapture
