"""Prints analyticssink events for the demo (standard library only).

  demo_events.py follow URL    print live events from URL/api/events/stream until the server goes away
  demo_events.py summary DB [CLIPS]    print what the SQLite database holds after the run
                                       (and the MP4 clips stored in the directory CLIPS)
"""
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request


def describe(ev):
    what = ev.get("text") or ev.get("label") or ""
    if ev.get("track_id") is not None:
        what += f" #{ev['track_id']}"
    if ev["type"] == "clip":
        what = f"clip {ev['start_ns'] / 1e9:.2f}-{(ev.get('end_ns') or ev['start_ns']) / 1e9:.2f} s ({(ev.get('data') or {}).get('reason', '')})"
    conf = "" if ev.get("confidence") is None else f" conf {ev['confidence']:.2f}"
    return f"{ev['start_ns'] / 1e9:7.2f} s  {ev['type']:<14} {ev['stream']:<7} score {ev.get('clip_worthy_score', 0):.2f}{conf}  {what}"


def follow(url):
    deadline = time.monotonic() + 30
    while True:
        try:
            stream = urllib.request.urlopen(url + "/api/events/stream", timeout=3600)
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                sys.exit(f"no analyticssink at {url}")
            time.sleep(0.2)  # the pipeline is still starting
    print(f"live events from {url}/api/events/stream:", flush=True)
    event = None
    try:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event not in (None, "lagged"):
                print("  " + describe(json.loads(line[5:])), flush=True)
    except (ConnectionError, OSError, ValueError):
        pass  # the pipeline ended and took the server with it


def summary(db, clips=None):
    con = sqlite3.connect(db)
    rows = con.execute("SELECT type, COUNT(*), MAX(clip_worthy_score) FROM rtai_events GROUP BY type ORDER BY type").fetchall()
    total = sum(r[1] for r in rows)
    print(f"summary: {total} events stored in {db}")
    if total == 0:
        sys.exit("summary: no events: the pipeline produced nothing to store")
    for t, n, best in rows:
        print(f"  {t:<14} {n:4d}   best clip score {best:.2f}")
    for start, end, score, data in con.execute(
        "SELECT start_ns, end_ns, clip_worthy_score, data FROM rtai_events WHERE type = 'clip' ORDER BY start_ns"
    ):
        d = json.loads(data) if data else {}
        stored = f" -> {d['url']}" if d.get("url") else ""
        print(f"  clip marker {start / 1e9:.2f}-{(end or start) / 1e9:.2f} s, score {score:.2f} ({d.get('reason', '')}){stored}")
    for (text,) in con.execute("SELECT text FROM rtai_events WHERE type = 'speech' AND text IS NOT NULL ORDER BY start_ns LIMIT 20"):
        print(f"  transcript: {text}")
    if clips and os.path.isdir(clips):
        files = sorted(f for f in os.listdir(clips) if f.endswith(".mp4"))
        print(f"summary: {len(files)} clips stored in {clips}")
        for f in files:
            print(f"  {os.path.join(clips, f)}  ({os.path.getsize(os.path.join(clips, f))} bytes)")


if __name__ == "__main__":
    {"follow": follow, "summary": summary}[sys.argv[1]](*sys.argv[2:])
