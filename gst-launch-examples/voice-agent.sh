#!/usr/bin/env bash
# The voice agent (issue 19): a browser's microphone over WebRTC → speculative voice gate →
# speech recognition, with the gate's decisions and the transcripts sent back to the page
# over the WebRTC data channel `control`, live:
#
#   browser mic ─ WebRTC (Opus) → webrtcserve mode=send-recv ─ audio_src → audioconvert ! audioresample
#     → 16 kHz mono S16LE → specvadgate (speech-start at once, speech-cancel for false starts)
#     → inferclient protocol=runpod output=text (pocketsphinx over the runpod SDK's local API)
#       segment-events=immediate: a speech-start (barge-in) leaves at once, not behind the
#       previous utterance's transcript still being recognised
#     → webrtcserve's control pad → data channel `control` → the /voice page
#                                   (speech-start/commit/end/cancel, x-transcript; interrupt back)
#
# Usage: voice-agent.sh [--duration N] [--port P] [--listen HOST] [--fake-mic [WAV]]
#   Prints the page's URL (http://127.0.0.1:3000/voice by default, another port if 3000 is
#   taken; open it, allow the
#   microphone, speak) and runs until Ctrl-C, or N seconds with --duration N.
#   --fake-mic opens the page in headless chromium with a generated microphone
#   (scripts/voice/make_wav.py: espeak-ng utterances with clicks) or WAV, and prints what the
#   page receives. Browsers need a secure context for the microphone except on localhost:
#   put TLS in front when --listen 0.0.0.0.
#   RTAI_VOICE_WORK=DIR keeps the run's files (logs) there.
#   RTAI_EXAMPLE_SHORT=1 (the test suite runs that): --fake-mic with one utterance between two
#   clicks, then exit; fails unless the page got a speech-start for each and a transcript.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$root/target/release}"
python="${RTAI_PYTHON:-python3}"

duration=0
port=3000
host=127.0.0.1
fake_mic=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --listen) host="$2"; shift 2 ;;
    --fake-mic)
      fake_mic=generate; shift
      if [ $# -gt 0 ] && [[ "$1" != --* ]]; then fake_mic="$1"; shift; fi ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

wav_args=()
if [ "${RTAI_EXAMPLE_SHORT:-0}" = 1 ]; then
  fake_mic=generate; duration=0; wav_args=(--count 1)
fi

work="${RTAI_VOICE_WORK:-$(mktemp -d)}"
mkdir -p "$work"
pids=()
gst_pid=""
cleanup() {
  [ -n "$gst_pid" ] && kill -INT "$gst_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $gst_pid; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# free_port, pick_port, wait_http, start_asr: shared with the video agent (scripts/agent/agent.sh).
source "$root/scripts/agent/lib.sh"
[ "$host" = 127.0.0.1 ] && port="$(pick_port "$port")"
start_asr "$work/runpod.log"
pids+=("$asr_pid")
wait_http "http://127.0.0.1:$asr_port/openapi.json" "runpod local API (pocketsphinx)" 60

url="http://127.0.0.1:$port/voice"
[ "$host" != 127.0.0.1 ] && url="http://$host:$port/voice"
cat <<EOF
speech:  specvadgate → pocketsphinx 5.1.1 (en-us) over the runpod local API on :$asr_port
page:    $url   (allow the microphone; transcripts and speech-start/cancel show live)
EOF
if [ -n "$fake_mic" ] && [ "$duration" -eq 0 ]; then echo "running chromium with a fake microphone, then exiting"
elif [ "$duration" -gt 0 ]; then echo "running for $duration s"; else echo "running until Ctrl-C"; fi

# The video the page shows is a small test picture (webrtcserve serves a video stream);
# the microphone comes back on w.audio_src, what goes to w.control reaches the page.
# No -e: the microphone mix never ends, so an EOS on Ctrl-C would never come out; nothing
# here needs finishing, so Ctrl-C stops the pipeline at once.
gst-launch-1.0 \
  webrtcserve name=w mode=send-recv listen="$host:$port" bitrate=300 \
  videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! w. \
  w.audio_src ! queue max-size-time=2000000000 ! audioconvert ! audioresample \
    ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! specvadgate name=gate \
    ! inferclient protocol=runpod url="http://127.0.0.1:$asr_port" model=pocketsphinx output=text \
      request-timeout=30000 segment-events=immediate \
    ! queue ! w.control \
  >"$work/gst.log" 2>&1 &
gst_pid=$!

if [ -n "$fake_mic" ]; then
  if [ "$fake_mic" = generate ]; then
    fake_mic="$work/mic.wav"
    "$python" "$root/scripts/voice/make_wav.py" "$fake_mic" --lead 2.5 "${wav_args[@]}"
  fi
  wait_http "http://127.0.0.1:$port/voice" "webrtcserve" 30
  seconds="$(soxi -D "$fake_mic" | cut -d. -f1)"
  node "$root/plugins/rtai-webrtc/tests/browser/voice.mjs" "http://127.0.0.1:$port/voice" "$fake_mic" \
    "$((seconds + 1))" 1 | "$python" "$root/scripts/voice/timeline.py" "${fake_mic%.wav}.json"
  if [ "$duration" -eq 0 ]; then
    kill -INT "$gst_pid" 2>/dev/null; wait "$gst_pid" 2>/dev/null; gst_pid=""
    echo "files of this run: $work"
    exit 0
  fi
fi

stop() { kill -INT "$gst_pid" 2>/dev/null || true; }
trap 'echo; echo stopping; stop' INT TERM
if [ "$duration" -gt 0 ]; then (sleep "$duration"; kill -INT "$gst_pid" 2>/dev/null) & pids+=($!); fi
set +e
while kill -0 "$gst_pid" 2>/dev/null; do wait "$gst_pid"; done
wait "$gst_pid"; rc=$?
gst_pid=""
[ "$rc" -eq 130 ] && rc=0  # gst-launch-1.0 stopped by the interrupt
set -e
[ "$rc" -ne 0 ] && { echo "pipeline failed (exit $rc):" >&2; tail -20 "$work/gst.log" >&2; }
echo "files of this run: $work"
exit "$rc"
