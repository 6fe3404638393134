#!/usr/bin/env bash
# RTMP ingest: rtmpserversrc listens for publishers (OBS, ffmpeg, rtmp2sink), checks the
# stream key and outputs FLV for stock flvdemux; ffmpeg publishes a test stream to it.
# The server pipeline ends (EOS) when the publisher leaves.
# OBS instead of ffmpeg: Server rtmp://127.0.0.1:PORT/live, Stream Key demo-key.
#
# Usage: rtmp-ingest.sh [PORT]     (default 1935; RTAI_EXAMPLE_SHORT=1 publishes 2 s instead of 10)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/../target/release}"
port="${1:-1935}"
# A busy port moves to a free one.
port="$(python3 -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' "$port")"
seconds=10
[ "${RTAI_EXAMPLE_SHORT:-}" = 1 ] && seconds=2

gst-launch-1.0 -m rtmpserversrc listen="127.0.0.1:$port" stream-name=cam1 stream-keys=cam1=demo-key \
  ! flvdemux name=d \
  d.video ! queue ! h264parse ! avdec_h264 ! fakesink sync=false \
  d.audio ! queue ! aacparse ! avdec_aac ! fakesink sync=false \
  | grep --line-buffered -E 'rtmp-publish|EOS' &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
# Wait until the server listens.
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
ffmpeg -hide_banner -loglevel error -nostdin -re \
  -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440 -t "$seconds" \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -pix_fmt yuv420p -c:a aac \
  -f flv "rtmp://127.0.0.1:$port/live/cam1?key=demo-key"
wait $server
trap - EXIT
