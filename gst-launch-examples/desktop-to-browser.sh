#!/usr/bin/env bash
# The desktop to browsers over WebRTC with one shared encode.
#   bash gst-launch-examples/desktop-to-browser.sh           # ffmpeg captures the desktop (ffmpegsrc)
#   bash gst-launch-examples/desktop-to-browser.sh ximage    # ximagesrc ! rtencodebin inside webrtcserve
# Without a display it starts Xvfb on :99 with a moving test window (xeyes/xclock if installed,
# else an ffplay test pattern). Open the printed URL in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
export GST_PLUGIN_PATH="${RTAI_PLUGIN_DIR:-$PWD/target/release}"
LISTEN="${LISTEN:-127.0.0.1:3000}"
children=()
cleanup() { for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ -z "${DISPLAY:-}" ]; then
  command -v Xvfb >/dev/null || { echo "no DISPLAY and no Xvfb: apt-get install xvfb" >&2; exit 1; }
  export DISPLAY=:99
  Xvfb "$DISPLAY" -screen 0 1280x720x24 -nolisten tcp & children+=($!)
  for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
  # Something that moves on the virtual desktop.
  if command -v xclock >/dev/null; then
    xclock -update 1 -geometry 400x400+100+100 & children+=($!)
  else
    ffplay -loglevel error -f lavfi -i "testsrc2=size=640x360:rate=30" -window_title test \
      -left 100 -top 100 & children+=($!)
  fi
fi

serve() {
  if [ "${1:-ffmpeg}" = ximage ]; then
    exec gst-launch-1.0 -e -m ximagesrc use-damage=false ! video/x-raw,framerate=30/1 ! videoconvert \
      ! webrtcserve listen="$LISTEN"
  else
    exec gst-launch-1.0 -e -m ffmpegsrc ! webrtcserve listen="$LISTEN"
  fi
}

if [ "${RTAI_EXAMPLE_SHORT:-0}" != 1 ]; then
  echo "open http://$LISTEN/  (WHEP: POST http://$LISTEN/whep)"
  serve "${1:-ffmpeg}"
  exit
fi

# Short mode (the test suite): on a free port, wait until the desktop's first frame is
# ingested and the player page is served, then stop.
LISTEN="127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
serve "${1:-ffmpeg}" >"$log" 2>&1 & children+=($!)
for _ in $(seq 200); do
  if grep -q first_frame_ingested "$log" && python3 -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()' "http://$LISTEN/" 2>/dev/null; then
    echo "desktop-to-browser: first frame ingested, player page served at http://$LISTEN/"
    rm -f "$log"
    exit 0
  fi
  sleep 0.1
done
echo "desktop-to-browser: no frame or no page within 20 s" >&2
cat "$log" >&2
rm -f "$log"
exit 1
