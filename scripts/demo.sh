#!/usr/bin/env bash
# Sets everything up, builds, and runs the flagship demo: a generated stream (moving shapes
# and espeak-ng speech with clicks) through specvadgate, inferclient (MLServer detector) and
# objtracker into analyticssink,
# with the latencymetrics tracer; prints the dashboard URL, live events and a summary.
#   bash scripts/demo.sh          the flagship demo (analytics-demo.sh)
#   bash scripts/demo.sh voice    specvadgate's decisions on generated speech (voice-gate.sh)
#   bash scripts/demo.sh live     the same on the microphone
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export GST_PLUGIN_PATH="$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
case "${1:-}" in
  voice) exec bash gst-launch-examples/voice-gate.sh ;;
  live) exec bash gst-launch-examples/voice-gate.sh live ;;
  *) exec bash gst-launch-examples/analytics-demo.sh "$@" ;;
esac
