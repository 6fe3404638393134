#!/usr/bin/env bash
# Sets everything up, builds, and runs the flagship demo: the video-understanding agent
# (scripts/agent/agent.sh): a real face detector (NudeNet YOLOv8n on MLServer) with tracking,
# speech segments with prosody transcribed by pocketsphinx (runpod local API), scored events,
# clips recorded by cliprecorder, and the dashboard; prints live events and a summary.
#   bash scripts/demo.sh [--duration N] [--s3 URL|moto] [FILE|URL|v4l2]   the agent, until Ctrl-C
#   bash scripts/demo.sh ball     the earlier short demo on videotestsrc (analytics-demo.sh)
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
  ball) shift; exec bash gst-launch-examples/analytics-demo.sh "$@" ;;
  *) exec bash scripts/agent/agent.sh "$@" ;;
esac
