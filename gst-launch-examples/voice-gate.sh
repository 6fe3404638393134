#!/usr/bin/env bash
# specvadgate on speech: prints every segment decision (start, commit, end, cancel).
#
# Usage:
#   voice-gate.sh            generated espeak-ng speech with clicks and pauses
#   voice-gate.sh FILE       any audio file gst can decode
#   voice-gate.sh live       the microphone: autoaudiosrc (or pulsesrc) ! audioconvert ! audioresample ! specvadgate
# RTAI_EXAMPLE_SHORT=1 uses a shorter generated clip (the test suite runs that).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/../target/release}"

source_desc=""
case "${1:-}" in
  live) source_desc="autoaudiosrc" ;;
  "")
    work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
    sentences=("Hello there, this gate forwards speech at once." "A cough or a click is taken back with a cancel event.")
    [ "${RTAI_EXAMPLE_SHORT:-0}" = 1 ] && sentences=("Hello there, this gate forwards speech at once.")
    parts=("$work/pause.wav")
    sox -q -n -r 16000 -c 1 "$work/pause.wav" trim 0 0.8
    sox -q -n -r 16000 -c 1 "$work/click.wav" synth 0.03 whitenoise vol 0.7
    i=0
    for text in "${sentences[@]}"; do
      espeak-ng -s 165 -w "$work/raw$i.wav" "$text"
      sox -q "$work/raw$i.wav" -r 16000 -c 1 "$work/speech$i.wav"
      parts+=("$work/click.wav" "$work/pause.wav" "$work/speech$i.wav" "$work/pause.wav")
      i=$((i + 1))
    done
    sox -q "${parts[@]}" "$work/demo.wav"
    source_desc="filesrc location=$work/demo.wav ! decodebin"
    ;;
  *) source_desc="filesrc location=$1 ! decodebin" ;;
esac

echo "specvadgate: pipeline: $source_desc ! audioconvert ! audioresample ! specvadgate ! fakesink"
# gst-launch-1.0 -m prints bus messages; keep the gate's decisions.
gst-launch-1.0 -m $source_desc ! audioconvert ! audioresample ! specvadgate name=gate ! fakesink sync=false \
  | sed -n -E 's/.*from element "gate".*: (speech-(start|commit|end|cancel)), (.*);?$/\1  \3/p' \
  | sed -E "s/\(guint64\)//g; s/;$//" | grep -E "speech-"
