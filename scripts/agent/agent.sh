#!/usr/bin/env bash
# The video-understanding agent (issue 24), end to end on this machine:
#
#   ffmpeg (input: a generated scene with speech, a FILE, a URL or v4l2) → H.264 + PCM
#   → gst-launch-1.0:
#      video: h264parse ! tee ─ cliprecorder (pre-roll ring, MP4 clips on analyticssink's markers)
#                            └ avdec_h264 ! inferclient (NudeNet YOLOv8n behind MLServer, gRPC,
#                              box-format=yolov8) ! objtracker ! analyticssink
#      audio: specvadgate (segments) ! prosodymeter (pitch, level, rate)
#             ! inferclient protocol=runpod output=text (pocketsphinx over the runpod SDK's local API)
#             ! analyticssink (transcripts, prosody, scores, clip markers, dashboard, SQLite)
#
# Usage: agent.sh [--duration N] [--s3 s3://bucket/prefix | --s3 moto] [--port P] [--size WxH]
#                 [--clips DIR] [--vlm URL --vlm-model NAME] [FILE|URL|v4l2[:/dev/videoN]]
#   Runs until Ctrl-C (or N seconds), then prints a summary naming the stored clips.
#   --s3 moto starts moto's S3 server (.venv-moto) on loopback with a bucket "clips".
#   S3 credentials and endpoint for other URLs: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#   AWS_ENDPOINT_URL (or AWS_ENDPOINT), AWS_REGION.
#   RTAI_AGENT_WORK=DIR keeps the run's files (database, clips, logs) there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$root/target/release}"
python="${RTAI_PYTHON:-python3}"

duration=0
s3=""
port=9464
size="1280x720"
clips=""
vlm=""
vlm_model=""
input=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --s3) s3="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --clips) clips="$2"; shift 2 ;;
    --vlm) vlm="$2"; shift 2 ;;
    --vlm-model) vlm_model="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) input="$1"; shift ;;
  esac
done
width="${size%x*}"
height="${size#*x}"

work="${RTAI_AGENT_WORK:-$(mktemp -d)}"
mkdir -p "$work"
clips="${clips:-$work/clips}"
pids=()
gst_pid=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# free_port, pick_port, wait_http, start_asr (shared with gst-launch-examples/voice-agent.sh).
source "$here/lib.sh"
port="$(pick_port "$port")"

# --- The detector: NudeNet's YOLOv8n (PyPI nudenet 3.4.2, nudenet/320n.onnx) served raw by
# MLServer 1.7.1 with onnxruntime (scripts/peers/nudenet), decoded by inferclient.
infer_http="$(free_port)"
infer_grpc="$(free_port)"
PYTHONPATH="$root/scripts/peers/nudenet" MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT="$infer_http" \
  MLSERVER_GRPC_PORT="$infer_grpc" MLSERVER_METRICS_PORT="$(free_port)" MLSERVER_METRICS_ENDPOINT="" \
  MLSERVER_PARALLEL_WORKERS=0 MLSERVER_LOGGING_LEVEL=WARNING \
  "$root/.venv-mlserver/bin/mlserver" start "$root/scripts/peers/nudenet" >"$work/mlserver.log" 2>&1 &
pids+=($!)

# --- Speech recognition: pocketsphinx behind the runpod SDK's local API (lib.sh).
start_asr "$work/runpod.log"
pids+=("$asr_pid")

# --- Object storage for clips.
s3_props=()
if [ "$s3" = moto ]; then
  s3_port="$(free_port)"
  "$root/.venv-moto/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$s3_port/moto-api/" "moto S3 server" 60
  "$root/.venv-moto/bin/python" - "$s3_port" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
             aws_access_key_id="demo", aws_secret_access_key="demo").create_bucket(Bucket="clips")
PY
  s3="s3://clips/agent"
  s3_props=(s3-endpoint="http://127.0.0.1:$s3_port" s3-region=us-east-1 s3-access-key-id=demo s3-secret-access-key=demo)
  echo "object storage: moto S3 server on http://127.0.0.1:$s3_port, bucket 'clips'"
elif [ -n "$s3" ]; then
  endpoint="${AWS_ENDPOINT_URL:-${AWS_ENDPOINT:-}}"
  [ -n "$endpoint" ] && s3_props=(s3-endpoint="$endpoint")
fi
clip_location="${s3:-$clips}"

# --- The input, as H.264 (1 s GOP, no B-frames) + 16 kHz PCM in Matroska on a pipe.
ff=(ffmpeg -hide_banner -nostdin -loglevel error)
enc=(-c:v libx264 -preset ultrafast -tune zerolatency -pix_fmt yuv420p -g 30 -bf 0
     -x264-params repeat-headers=1 -c:a pcm_s16le -ar 16000 -ac 1 -f matroska -live 1 -)
limit=()
[ "$duration" -gt 0 ] && limit=(-t "$duration")
if [ -z "$input" ]; then
  # A generated scene: scikit-image's astronaut photo (a real face) moving over a gradient,
  # with espeak-ng speech: calm sentences and an excited one (higher, faster, louder).
  photo="$(ls "$root"/.venv/lib/python3*/site-packages/skimage/data/astronaut.png 2>/dev/null | head -1)"
  [ -n "$photo" ] || { echo "astronaut.png missing: scripts/setup.sh installs scikit-image into .venv" >&2; exit 1; }
  sox -q -n -r 16000 -c 1 -b 16 "$work/pause1.wav" trim 0 1.0
  sox -q -n -r 16000 -c 1 -b 16 "$work/pause2.wav" trim 0 2.0
  say() { # NAME VOLUME espeak-args... TEXT
    local name="$1" vol="$2"; shift 2
    espeak-ng -w "$work/$name-raw.wav" "$@"
    sox -q "$work/$name-raw.wav" -r 16000 -c 1 -b 16 "$work/$name.wav" vol "$vol"
  }
  say s1 0.5 -v en-us -s 140 "Help is on the way, stay where you are."
  say s2 0.5 -v en-us -s 140 "The weather today will be sunny and warm."
  say s3 1.0 -v en-us -s 175 -p 60 "Look out, it is coming this way."
  sox -q "$work/pause1.wav" "$work/s1.wav" "$work/pause2.wav" "$work/s2.wav" "$work/pause2.wav" \
    "$work/s3.wav" "$work/pause2.wav" "$work/speech.wav"
  ph=$((height * 4 / 5))
  source_desc="generated ${width}x${height} scene: astronaut.png moving, espeak-ng speech every $(soxi -D "$work/speech.wav" | cut -d. -f1) s"
  ff+=(-re -f lavfi -i "gradients=s=${width}x${height}:r=30:speed=0.01:c0=0x203040:c1=0x406080:n=2"
       -loop 1 -framerate 30 -i "$photo" -stream_loop -1 -i "$work/speech.wav"
       -filter_complex "[1:v]scale=-2:$ph[p];[0:v][p]overlay=x='mod(t*$((width / 9))\,W+w)-w':y='(H-h)/2+(H-h)/3*sin(t/1.7)',format=yuv420p[v]"
       -map "[v]" -map 2:a)
elif [[ "$input" == v4l2* ]]; then
  dev="${input#v4l2}"; dev="${dev#:}"; dev="${dev:-/dev/video0}"
  source_desc="camera $dev (silent)"
  ff+=(-f v4l2 -i "$dev" -f lavfi -i "anullsrc=r=16000:cl=mono" -map 0:v -map 1:a
       -vf "scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:-1:-1")
else
  source_desc="$input"
  has_audio="$(timeout 20 ffprobe -v error -select_streams a -show_entries stream=index -of csv=p=0 "$input" 2>/dev/null | head -1 || true)"
  ff+=(-re -i "$input")
  if [ -n "$has_audio" ]; then
    ff+=(-map 0:v:0 -map 0:a:0)
  else
    ff+=(-f lavfi -i "anullsrc=r=16000:cl=mono" -map 0:v:0 -map 1:a -shortest)
  fi
  ff+=(-vf "scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:-1:-1")
fi
ff+=("${limit[@]}" "${enc[@]}")

wait_http "http://127.0.0.1:$infer_http/v2/models/nudenet/ready" "MLServer (NudeNet)" 120
wait_http "http://127.0.0.1:$asr_port/openapi.json" "runpod local API (pocketsphinx)" 60

vad_engine=energy
ls "$root"/.venv/lib/python3*/site-packages/silero_vad/data/silero_vad.onnx >/dev/null 2>&1 && vad_engine=silero

caption=()
if [ -n "$vlm" ]; then
  caption=(t. ! queue leaky=downstream max-size-buffers=2 ! videoconvert ! video/x-raw,format=RGB
           ! inferclient protocol=openai-chat url="$vlm" model="${vlm_model:-default}" min-interval-ms=5000
             output=text context-frames=2 ! queue ! sink.sink_2)
  vlm_desc="captions: $vlm (openai-chat, one every 5 s)"
else
  vlm_desc="captions: skipped (no vision-language model can run on this machine's 2 CPU cores in time; pass --vlm URL of an OpenAI-compatible server)"
fi

db="$work/events.sqlite"
url="http://127.0.0.1:$port"
mkdir -p "$clips"
cat <<EOF
input:     $source_desc
detector:  NudeNet YOLOv8n (PyPI nudenet 3.4.2, 320n.onnx) on MLServer 1.7.1, gRPC 127.0.0.1:$infer_grpc
speech:    $vad_engine VAD segments → prosodymeter → pocketsphinx 5.1.1 (en-us) over the runpod local API on :$asr_port
$vlm_desc
clips:     $clip_location
dashboard: $url/   (events $url/api/events, metrics $url/metrics)
EOF
if [ "$duration" -gt 0 ]; then echo "running for $duration s"; else echo "running until Ctrl-C"; fi

# ffmpeg writes into a FIFO that gst-launch reads. Ctrl-C stops ffmpeg only: the end of its
# output is EOS for the pipeline, which finishes the last clips and speech events, then exits.
mkfifo "$work/av.mkv"
set +e
"${ff[@]}" >"$work/av.mkv" 2>"$work/ffmpeg.log" &
ff_pid=$!
pids+=("$ff_pid")
GST_TRACERS=latencymetrics gst-launch-1.0 -e -q \
  analyticssink name=sink listen="127.0.0.1:$port" database="$db" keywords=help,fire clip-threshold=0.6 \
    transcript-wait=8000 \
  fdsrc fd=0 ! matroskademux name=demux \
  demux.video_0 ! queue max-size-time=2000000000 ! h264parse config-interval=-1 ! tee name=t \
    t. ! queue max-size-time=0 max-size-bytes=0 max-size-buffers=0 \
       ! cliprecorder marker-source=sink location="$clip_location" spool-location="$work/spool" \
         pre-roll=5000 post-roll=3000 "${s3_props[@]}" ! fakesink sync=false async=false \
    t. ! queue leaky=downstream max-size-buffers=30 ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB \
       ! inferclient protocol=kserve-grpc url="http://127.0.0.1:$infer_grpc" model=nudenet input-name=images \
         input-width=320 input-height=320 box-format=yolov8 labels-file="$root/scripts/peers/nudenet/labels.txt" \
         confidence-threshold=0.4 interval=3 max-inflight=2 latency-budget=1000 \
       ! objtracker ! queue ! sink.sink_0 \
  demux.audio_0 ! queue max-size-time=2000000000 ! audioconvert ! audioresample \
    ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! specvadgate engine="$vad_engine" stop-time=600 \
    ! prosodymeter ! inferclient protocol=runpod url="http://127.0.0.1:$asr_port" model=pocketsphinx \
      output=text request-timeout=30000 ! queue ! sink.sink_1 \
  "${caption[@]}" <"$work/av.mkv" >"$work/gst.log" 2>&1 &
gst_pid=$!
"$python" "$root/scripts/demo_events.py" follow "$url" &
follower=$!
pids+=("$follower")
trap 'echo; echo "stopping: input ended, finishing speech events and clips…"; kill "$ff_pid" 2>/dev/null' INT TERM
while kill -0 "$gst_pid" 2>/dev/null; do wait "$gst_pid"; done
wait "$gst_pid"; rc=$?
set -e
trap - INT TERM
[ "$rc" -ne 0 ] && { echo "pipeline failed (exit $rc):" >&2; tail -20 "$work/gst.log" >&2; }
kill "$follower" 2>/dev/null || true
local_clips="$clips"
[ -n "$s3" ] && local_clips=""
"$python" "$root/scripts/demo_events.py" summary "$db" $local_clips
if [ -n "${s3_port:-}" ]; then
  "$root/.venv-moto/bin/python" - "$s3_port" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="demo", aws_secret_access_key="demo")
objs = s3.list_objects_v2(Bucket="clips").get("Contents", [])
print(f"summary: {len(objs)} clips stored in s3://clips (moto)")
for o in objs:
    print(f"  s3://clips/{o['Key']}  ({o['Size']} bytes)")
PY
fi
echo "files of this run: $work"
exit "$rc"
