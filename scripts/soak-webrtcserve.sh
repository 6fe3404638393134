#!/usr/bin/env bash
# webrtcserve soak (not CI): ffmpegsrc capturing an Xvfb desktop (a moving window) into
# webrtcserve for $SOAK_SECONDS (default 900 = 15 min) with two viewers decoding all along:
# two headless chromium pages on the player page (default, SOAK_PEERS=chromium, through
# plugins/rtai-webrtc/tests/browser/soak.mjs) or two aiortc peers (SOAK_PEERS=aiortc, one
# over WHEP, one over the WebSocket). Fails when gst-launch dies; when a viewer's frames do
# not grow (chromium: both the frames presented, requestVideoFrameCallback, and decoded,
# getStats, sampled every second, for more than $SOAK_STALL_S s; aiortc: within any 5 s
# window); when gst-launch's
# RSS grows more than 5 % between the end of the warm-up (60 s, or a tenth of a short run)
# and the end; or when a lifecycle message is missing (ffmpeg_spawned,
# first_frame_ingested, track_active, peer_connected). Prints the figures; needs xvfb,
# ffmpeg, and chromium with tests/browser's node_modules (or .venv-aiortc).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SOAK_SECONDS:-900}"
WARMUP=$(( SECS >= 600 ? 60 : SECS / 10 ))
work="$(mktemp -d)"
# The plugin is copied out of target/: a rebuild during the run must not replace the
# library under the running pipeline. RTAI_PLUGIN_DIR: use that build instead.
if [ -z "${RTAI_PLUGIN_DIR:-}" ]; then
  cargo build --release -p gst-plugin-rtai-webrtc
  mkdir -p "$work/plugins" && cp target/release/libgstrtaiwebrtc.so "$work/plugins/"
  RTAI_PLUGIN_DIR="$work/plugins"
fi
export GST_PLUGIN_PATH="$RTAI_PLUGIN_DIR"
# SOAK_NICE (e.g. -10, as root): the pipeline, ffmpeg, the desktop and the viewers run at
# that niceness, so a machine shared with builds measures webrtcserve, not the scheduler.
NICE=(nice -n "${SOAK_NICE:-0}")
children=()
cleanup() { for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

export DISPLAY=:97
"${NICE[@]}" Xvfb "$DISPLAY" -screen 0 1280x720x24 -nolisten tcp & children+=($!)
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
"${NICE[@]}" ffplay -loglevel error -f lavfi -i "testsrc2=size=640x360:rate=30" -window_title soak \
  -left 100 -top 100 & children+=($!)

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
GST_DEBUG="webrtcserve:4,ffmpegsrc:4" "${NICE[@]}" gst-launch-1.0 -m ffmpegsrc ! webrtcserve listen="127.0.0.1:$port" \
  >"$work/gst.log" 2>&1 & gst=$!; children+=($gst)
for _ in $(seq 100); do grep -q track_active "$work/gst.log" && break; sleep 0.2; done
grep -q track_active "$work/gst.log" || { echo "soak: the stream did not start" >&2; tail "$work/gst.log" >&2; exit 1; }

PEERS="${SOAK_PEERS:-chromium}"
if [ "$PEERS" = chromium ]; then
  "${NICE[@]}" node plugins/rtai-webrtc/tests/browser/soak.mjs "http://127.0.0.1:$port/" 2 "$(( SECS + 60 ))" \
    >"$work/chromium.jsonl" 2>"$work/chromium.err" & children+=($!)
else
  peer=plugins/rtai-webrtc/tests/peers/aiortc_peer.py
  frames=$(( (SECS + 30) * 60 ))
  for mode in whep ws; do
    .venv-aiortc/bin/python "$peer" "$mode" "http://127.0.0.1:$port" "$frames" "$(( SECS + 60 ))" progress \
      >"$work/$mode.out" 2>"$work/$mode.progress" & children+=($!)
  done
fi

# chromium: after the first 15 s, both viewers' presented and decoded frames must grow at
# every 1 s tick; a longer span without growth than $SOAK_STALL_S seconds (default 5: on a
# 2-core machine shared with builds, node and chromium miss ticks of 2-3 s now and then) fails, and
# the longest span is printed. No page error either.
STALL_S="${SOAK_STALL_S:-5}"
chromium_check() {
  python3 - "$work/chromium.jsonl" "$1" "$STALL_S" <<'PY'
import json, sys
ticks = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = [t for t in ticks if "error" in t]
ticks = [t for t in ticks if "t" in t and t["t"] >= 15]
limit = float(sys.argv[3])
if bad:
    sys.exit(f"chromium: {bad[0]}")
longest = 0
for k in ("frames", "decoded"):
    for i in range(len(ticks[0][k]) if ticks else 0):
        last = ticks[0]
        for a, b in zip(ticks, ticks[1:]):
            if b[k][i] > a[k][i]:
                gap = b["t"] - last["t"]
                longest = max(longest, gap)
                if gap > limit:
                    sys.exit(f"viewer {i}'s {k} did not grow for {gap} s (limit {limit} s): "
                             f"{last[k][i]} at t={last['t']} s, {b[k][i]} at t={b['t']} s")
                last = b
        if ticks and ticks[-1]["t"] - last["t"] > limit:
            sys.exit(f"viewer {i}'s {k} stalled at {last[k][i]} since t={last['t']} s")
if ticks and (ticks[-1]["errors"] or any(ticks[-1]["pageErrors"])):
    sys.exit(f"page errors: {ticks[-1]}")
if sys.argv[2] == "final":
    if len(ticks) < 2:
        sys.exit("chromium: no ticks")
    a, b = ticks[0], ticks[-1]
    dt = b["t"] - a["t"]
    fps = [round((y - x) / dt, 2) for x, y in zip(a["decoded"], b["decoded"])]
    print(f"{b['frames']} presented and {b['decoded']} decoded frames, {fps} fps decoded "
          f"from {a['t']} s to {b['t']} s, {len(ticks)} ticks, longest span without a new "
          f"frame {longest} s, states {b['states']}")
else:
    print(ticks[-1]["frames"] if ticks else "starting")
PY
}

rss() { awk '/VmRSS/ {print $2}' "/proc/$gst/status"; }
last_whep=0; last_ws=0; rss_warm=""; start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$SECS" ]; do
  sleep 5
  kill -0 "$gst" 2>/dev/null || { echo "soak: gst-launch died" >&2; tail -20 "$work/gst.log" >&2; exit 1; }
  elapsed=$(( $(date +%s) - start ))
  if [ "$PEERS" = chromium ]; then
    status=$(chromium_check live) || { echo "soak: $status" >&2; tail -3 "$work/chromium.err" >&2; exit 1; }
    progress="chromium presented=$status"
  else
    now_whep=$(tail -1 "$work/whep.progress" 2>/dev/null | awk '{print $2}')
    now_ws=$(tail -1 "$work/ws.progress" 2>/dev/null | awk '{print $2}')
    if [ "$elapsed" -gt 15 ]; then
      [ "${now_whep:-0}" -gt "$last_whep" ] || { echo "soak: the WHEP viewer stalled at ${now_whep:-0} frames after ${elapsed}s" >&2; cat "$work/whep.out" >&2; exit 1; }
      [ "${now_ws:-0}" -gt "$last_ws" ] || { echo "soak: the WebSocket viewer stalled at ${now_ws:-0} frames after ${elapsed}s" >&2; cat "$work/ws.out" >&2; exit 1; }
    fi
    last_whep=${now_whep:-0}; last_ws=${now_ws:-0}
    progress="whep=${last_whep} ws=${last_ws} frames"
  fi
  if [ -z "$rss_warm" ] && [ "$elapsed" -ge "$WARMUP" ]; then rss_warm=$(rss); fi
  echo "soak: ${elapsed}s ${progress}, rss=$(rss) kB"
done
rss_end=$(rss)
growth=$(python3 -c "print(round(100 * ($rss_end - $rss_warm) / $rss_warm, 2))")
for m in ffmpeg_spawned first_frame_ingested track_active peer_connected; do
  grep -q "$m" "$work/gst.log" || { echo "soak: no $m in the lifecycle log" >&2; exit 1; }
done
if [ "$PEERS" = chromium ]; then
  viewers=$(chromium_check final) || { echo "soak: $viewers" >&2; exit 1; }
else
  viewers="whep ${last_whep} and ws ${last_ws} frames decoded"
fi
echo "soak: ${SECS}s, ${PEERS}: ${viewers}; RSS ${rss_warm} kB after warm-up -> ${rss_end} kB (${growth} %)"
python3 -c "import sys; sys.exit(0 if $growth < 5 else 1)" || { echo "soak: RSS grew ${growth} % (limit 5 %)" >&2; exit 1; }
echo "soak: ok"
