#!/usr/bin/env bash
# Sets everything up, builds, and runs the demo: espeak-ng speech with clicks
# and pauses through specvadgate, printing each speech segment decision.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export GST_PLUGIN_PATH="$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
exec bash gst-launch-examples/voice-gate.sh "${1:-}"
