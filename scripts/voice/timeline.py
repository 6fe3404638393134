#!/usr/bin/env python3
"""Prints what the /voice page received (one JSON line of
plugins/rtai-webrtc/tests/browser/voice.mjs on stdin) as a timeline since the microphone
started, then each utterance and click of the WAV (make_wav.py's sidecar, the argument) with
the latency from its start in the WAV to the first speech-start after it in the page.
Exits 1 if an utterance or click got no speech-start, no transcript came, or the page had
errors.

    node voice.mjs URL mic.wav 15 3 | timeline.py mic.json
"""
import json
import sys


def main():
    events = json.load(open(sys.argv[1]))["events"] if len(sys.argv) > 1 else []
    for line in sys.stdin:
        r = json.loads(line)
        if "error" in r:
            sys.exit(f"chromium: {r['error']} {r.get('errors')}")
        t0 = r["micStartedAt"]
        failed = False
        msgs = r["messages"]
        for m in msgs:
            p = m.get("payload")
            text = p.get("text", "") if isinstance(p, dict) and m["type"] == "x-transcript" else ""
            seg = m.get("segment_id")
            print(f"{(m['receivedAt'] - t0) / 1000:7.3f} s  {m['type']:14} segment {seg}  {text}")
        starts = [((m["receivedAt"] - t0) / 1000, m.get("segment_id")) for m in msgs if m["type"] == "speech-start"]
        for i, e in enumerate(events):
            nxt = events[i + 1]["start"] if i + 1 < len(events) else float("inf")
            hit = next((s for s in starts if e["start"] - 0.1 <= s[0] < nxt), None)
            what = e["kind"] if e["kind"] == "click" else f"\"{e['text']}\""
            if hit is None:
                print(f"{what:28} at {e['start']:6.3f} s: no speech-start")
                failed = True
                continue
            fate = {m["type"] for m in msgs if m.get("segment_id") == hit[1]} & {"speech-commit", "speech-cancel"}
            print(f"{what:28} at {e['start']:6.3f} s: speech-start +{(hit[0] - e['start']) * 1000:.0f} ms, "
                  f"{', '.join(sorted(fate)) or 'undecided'}")
        for err in r.get("errors", []) + r.get("pageErrors", []):
            print(f"error: {err}")
            failed = True
        if events and not any(m["type"] == "x-transcript" for m in msgs):
            print("no transcript reached the page")
            failed = True
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
