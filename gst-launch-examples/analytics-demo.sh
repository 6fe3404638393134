#!/usr/bin/env bash
# The flagship demo: a generated stream (moving shapes + espeak-ng speech with clicks)
# through the collection's elements into analyticssink, which stores events (SQLite),
# with inferclient sending frames to a detector served by MLServer (KServe v2) that the
# demo starts on loopback (a tiny model that finds videotestsrc's ball),
# serves the live dashboard, /api and /metrics, while the latencymetrics tracer measures
# every element. Prints the dashboard URL, the events as they arrive, and a summary.
#
# Usage: analytics-demo.sh [PORT]     (default 9464; RTAI_EXAMPLE_SHORT=1 for a short run)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$root/target/release}"
python="${RTAI_PYTHON:-python3}"
port="${1:-9464}"
# A busy default port (another demo, a test run) moves to a free one.
port="$("$python" -c 'import socket, sys
p = int(sys.argv[1])
s = socket.socket()
try:
    s.bind(("127.0.0.1", p))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' "$port")"

work="$(mktemp -d)"
pid=""
mlserver=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$mlserver" ] && kill "$mlserver" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# free_port, shared with the other examples.
# shellcheck source=../scripts/agent/lib.sh
. "$root/scripts/agent/lib.sh"

# The detector: MLServer from .venv-mlserver (scripts/setup.sh) with the test peers' ball model.
models="$root/plugins/rtai-infer/tests/peers/mlserver"
infer_port="$(free_port)"
PYTHONPATH="$models:$root/scripts/peers/nudenet" MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT="$infer_port" MLSERVER_GRPC_PORT="$(free_port)" \
  MLSERVER_METRICS_PORT="$(free_port)" MLSERVER_METRICS_ENDPOINT="" MLSERVER_PARALLEL_WORKERS=0 \
  "$root/.venv-mlserver/bin/mlserver" start "$models" >"$work/mlserver.log" 2>&1 &
mlserver=$!

# Speech: sentences with a click before each and pauses between (the clicks are false starts).
sentences=("Look, the red ball is moving across the screen." "Help is on the way, stay where you are." "This is the end of the demo.")
[ "${RTAI_EXAMPLE_SHORT:-0}" = 1 ] && sentences=("Look, the red ball is moving.")
sox -q -n -r 16000 -c 1 "$work/pause.wav" trim 0 0.8
sox -q -n -r 16000 -c 1 "$work/click.wav" synth 0.03 whitenoise vol 0.7
parts=("$work/pause.wav")
i=0
for text in "${sentences[@]}"; do
  espeak-ng -s 165 -w "$work/raw$i.wav" "$text"
  sox -q "$work/raw$i.wav" -r 16000 -c 1 "$work/speech$i.wav"
  parts+=("$work/click.wav" "$work/pause.wav" "$work/speech$i.wav" "$work/pause.wav")
  i=$((i + 1))
done
sox -q "${parts[@]}" "$work/speech.wav"
seconds="$(soxi -D "$work/speech.wav")"
frames="$(awk -v s="$seconds" 'BEGIN { printf "%d", s * 30 }')"

"$python" - "$infer_port" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/models/ball/ready", timeout=2)
        break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit("MLServer did not come up")
        time.sleep(0.2)
PY
echo "detector: MLServer (KServe v2) on http://127.0.0.1:$infer_port, model 'ball'"

db="$work/events.sqlite"
url="http://127.0.0.1:$port"
echo "dashboard: $url/   (events API $url/api/events, Prometheus $url/metrics)"
echo "pipeline: speech.wav ! specvadgate ! analyticssink.sink_0 ; videotestsrc ball ! inferclient ! objtracker ! analyticssink.sink_1 (${seconds%.*} s)"
# identity sync=true plays the file in real time so the dashboard fills as it would live.
GST_TRACERS=latencymetrics gst-launch-1.0 -q \
  analyticssink name=sink listen="127.0.0.1:$port" database="$db" \
  filesrc location="$work/speech.wav" ! wavparse ! audioconvert ! audioresample ! identity sync=true \
    ! specvadgate name=gate ! queue ! sink.sink_0 \
  videotestsrc num-buffers="$frames" pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 \
    ! identity sync=true ! videoconvert ! video/x-raw,format=RGB \
    ! inferclient url="http://127.0.0.1:$infer_port" model=ball labels=ball input-width=320 input-height=320 interval=3 latency-budget=500 \
    ! objtracker ! queue ! sink.sink_1 &
pid=$!
"$python" "$root/scripts/demo_events.py" follow "$url" &
follower=$!
wait "$pid"
pid=""
wait "$follower" || true
"$python" "$root/scripts/demo_events.py" summary "$db"
