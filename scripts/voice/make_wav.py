#!/usr/bin/env python3
"""The voice agent's test microphone (issue 19): a 16-bit PCM mono WAV of a few short
espeak-ng utterances separated by silence, with clicks (a few ms of loud noise) between
them, and a JSON sidecar with where each one starts.

    make_wav.py OUT.wav [--rate 48000] [--lead 1.0] [--count 3] [--gap 1.0] [--click-ms 6]

Writes OUT.wav and OUT.json:
    {"rate": 48000, "duration": 11.4,
     "events": [{"kind": "click", "start": 1.0, "duration": 0.006},
                {"kind": "utterance", "text": "...", "start": 2.2, "duration": 1.3}, ...]}
(seconds from the file's first sample). An utterance's start is its first sample above
-40 dBFS (espeak-ng's leading silence is trimmed), so a detector's speech start is
comparable with it. Chromium plays it as a fake microphone with
`--use-fake-device-for-media-stream --use-file-for-fake-audio-capture=OUT.wav%noloop`;
`gst-launch-examples/voice-agent.sh` and plugins/rtai-webrtc/tests/voice_agent.rs use it.
The clicks are what a speculative gate must retract (speech-cancel); the silence carries a
faint noise bed (-66 dBFS), as a real microphone does. Deterministic: the same arguments
give the same file. Needs espeak-ng and sox.
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import wave

UTTERANCES = [
    "hello world, how are you",
    "please turn on the light",
    "what time is it now",
    "stop the music please",
]  # --count takes the first N


def pcm(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        raw = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def speak(text, rate, tmp, i):
    raw = os.path.join(tmp, f"raw{i}.wav")
    out = os.path.join(tmp, f"say{i}.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", raw, text], check=True)
    # 16-bit mono at the file's rate, leading and trailing silence trimmed (-40 dBFS).
    subprocess.run(
        ["sox", "-q", raw, "-r", str(rate), "-c", "1", "-b", "16", out,
         "silence", "1", "0.005", "1%", "reverse", "silence", "1", "0.005", "1%", "reverse",
         "vol", "0.6"],
        check=True,
    )
    return pcm(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--count", type=int, default=3, help=f"utterances (1-{len(UTTERANCES)})")
    ap.add_argument("--lead", type=float, default=1.0, help="seconds of silence before the first event")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds of silence after each event")
    ap.add_argument("--click-ms", type=float, default=6.0)
    ap.add_argument("--tail", type=float, default=1.0, help="seconds of silence at the end")
    args = ap.parse_args()
    rng = random.Random(19)
    rate = args.rate
    floor = lambda n: [int(rng.gauss(0, 16)) for _ in range(n)]  # about -66 dBFS
    samples = floor(int(args.lead * rate))
    events = []

    def click():
        n = max(1, int(args.click_ms * rate / 1000))
        events.append({"kind": "click", "start": round(len(samples) / rate, 4), "duration": round(n / rate, 4)})
        # A decaying burst of noise, peaking near full scale: a tap on the microphone.
        samples.extend(int(max(-32767, min(32767, rng.uniform(-1, 1) * 30000 * math.exp(-3 * k / n)))) for k in range(n))
        samples.extend(floor(int(args.gap * rate)))

    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(UTTERANCES[: max(1, args.count)]):
            click()
            voice = speak(text, rate, tmp, i)
            events.append({"kind": "utterance", "text": text, "start": round(len(samples) / rate, 4),
                           "duration": round(len(voice) / rate, 4)})
            samples.extend(voice)
            samples.extend(floor(int(args.gap * rate)))
    click()
    samples.extend(floor(int(args.tail * rate)))
    with wave.open(args.out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    sidecar = os.path.splitext(args.out)[0] + ".json"
    with open(sidecar, "w") as f:
        json.dump({"rate": rate, "duration": round(len(samples) / rate, 4), "events": events}, f, indent=1)
    print(f"{args.out}: {len(samples) / rate:.2f} s, {sum(e['kind'] == 'utterance' for e in events)} utterances, "
          f"{sum(e['kind'] == 'click' for e in events)} clicks; offsets in {sidecar}", file=sys.stderr)


if __name__ == "__main__":
    main()
