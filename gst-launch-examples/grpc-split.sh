#!/usr/bin/env bash
# A pipeline split across two processes (or hosts) with grpcsink → grpcsrc.
#
# Receiver (start first; it listens, loopback by default):
#   gst-launch-1.0 grpcsrc listen=127.0.0.1:50051 auth-token=$TOKEN ! videoconvert ! autovideosink
# Sender (dials the receiver):
#   gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,width=640,height=360 ! x264enc tune=zerolatency \
#     ! grpcsink uri=http://127.0.0.1:50051 auth-token=$TOKEN
# Across hosts: listen=0.0.0.0:50051 with tls-certificate/tls-key on the receiver, and
# uri=https://HOST:50051 tls-ca=ca.pem on the sender. Either side can dial instead:
# grpcsink mode=server listen=... and grpcsrc mode=client uri=...
#
# This script runs both halves on this machine and prints what the receiver got.
# RTAI_EXAMPLE_SHORT=1 sends fewer frames (the test suite runs that).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/../target/release}"
frames=300
[ "${RTAI_EXAMPLE_SHORT:-0}" = 1 ] && frames=30
port="${RTAI_GRPC_PORT:-$((20000 + RANDOM % 20000))}"
token="example-$RANDOM$RANDOM"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

gst-launch-1.0 grpcsrc listen=127.0.0.1:$port auth-token=$token \
  ! h264parse ! avdec_h264 ! videoconvert ! fakesink name=out silent=false -v > "$work/receiver.log" 2>&1 &
receiver=$!
# No need to wait for the receiver: grpcsink redials with backoff until it listens.

gst-launch-1.0 -q videotestsrc num-buffers=$frames pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
  ! x264enc tune=zerolatency speed-preset=ultrafast ! h264parse \
  ! grpcsink uri=http://127.0.0.1:$port auth-token=$token
wait $receiver
decoded=$(grep -c "chain" "$work/receiver.log" || true)
echo "grpc-split: sent $frames H.264 frames over gRPC; the receiver decoded $decoded"
[ "$decoded" -eq "$frames" ]
