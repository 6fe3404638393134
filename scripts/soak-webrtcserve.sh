#!/usr/bin/env bash
# webrtcserve soak (not CI): ffmpegsrc capturing an Xvfb desktop (a moving window) into
# webrtcserve for $SOAK_SECONDS (default 900 = 15 min), two aiortc viewers decoding all
# along (one over WHEP, one over the WebSocket). Fails when gst-launch dies, when a
# viewer's decoded frames do not grow within any 5 s window, when gst-launch's RSS grows
# more than 5 % between the end of the warm-up (60 s, or a tenth of a short run) and the
# end, or when a lifecycle message is missing (ffmpeg_spawned, first_frame_ingested,
# track_active, peer_connected). Prints the figures; needs xvfb, ffmpeg and .venv-aiortc.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SOAK_SECONDS:-900}"
WARMUP=$(( SECS >= 600 ? 60 : SECS / 10 ))
cargo build --release -p gst-plugin-rtai-webrtc
export GST_PLUGIN_PATH="$PWD/target/release"
work="$(mktemp -d)"
children=()
cleanup() { for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

export DISPLAY=:97
Xvfb "$DISPLAY" -screen 0 1280x720x24 -nolisten tcp & children+=($!)
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
ffplay -loglevel error -f lavfi -i "testsrc2=size=640x360:rate=30" -window_title soak \
  -left 100 -top 100 & children+=($!)

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
GST_DEBUG="webrtcserve:4,ffmpegsrc:4" gst-launch-1.0 -m ffmpegsrc ! webrtcserve listen="127.0.0.1:$port" \
  >"$work/gst.log" 2>&1 & gst=$!; children+=($gst)
for _ in $(seq 100); do grep -q track_active "$work/gst.log" && break; sleep 0.2; done
grep -q track_active "$work/gst.log" || { echo "soak: the stream did not start" >&2; tail "$work/gst.log" >&2; exit 1; }

peer=plugins/rtai-webrtc/tests/peers/aiortc_peer.py
frames=$(( (SECS + 30) * 60 ))
for mode in whep ws; do
  .venv-aiortc/bin/python "$peer" "$mode" "http://127.0.0.1:$port" "$frames" "$(( SECS + 60 ))" progress \
    >"$work/$mode.out" 2>"$work/$mode.progress" & children+=($!)
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$gst/status"; }
last_whep=0; last_ws=0; rss_warm=""; start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$SECS" ]; do
  sleep 5
  kill -0 "$gst" 2>/dev/null || { echo "soak: gst-launch died" >&2; tail -20 "$work/gst.log" >&2; exit 1; }
  now_whep=$(tail -1 "$work/whep.progress" 2>/dev/null | awk '{print $2}')
  now_ws=$(tail -1 "$work/ws.progress" 2>/dev/null | awk '{print $2}')
  elapsed=$(( $(date +%s) - start ))
  if [ "$elapsed" -gt 15 ]; then
    [ "${now_whep:-0}" -gt "$last_whep" ] || { echo "soak: the WHEP viewer stalled at ${now_whep:-0} frames after ${elapsed}s" >&2; cat "$work/whep.out" >&2; exit 1; }
    [ "${now_ws:-0}" -gt "$last_ws" ] || { echo "soak: the WebSocket viewer stalled at ${now_ws:-0} frames after ${elapsed}s" >&2; cat "$work/ws.out" >&2; exit 1; }
  fi
  last_whep=${now_whep:-0}; last_ws=${now_ws:-0}
  if [ -z "$rss_warm" ] && [ "$elapsed" -ge "$WARMUP" ]; then rss_warm=$(rss); fi
  echo "soak: ${elapsed}s whep=${last_whep} ws=${last_ws} frames, rss=$(rss) kB"
done
rss_end=$(rss)
growth=$(python3 -c "print(round(100 * ($rss_end - $rss_warm) / $rss_warm, 2))")
for m in ffmpeg_spawned first_frame_ingested track_active peer_connected; do
  grep -q "$m" "$work/gst.log" || { echo "soak: no $m in the lifecycle log" >&2; exit 1; }
done
echo "soak: ${SECS}s, whep ${last_whep} and ws ${last_ws} frames decoded, RSS ${rss_warm} kB after warm-up -> ${rss_end} kB (${growth} %)"
python3 -c "import sys; sys.exit(0 if $growth < 5 else 1)" || { echo "soak: RSS grew ${growth} % (limit 5 %)" >&2; exit 1; }
echo "soak: ok"
