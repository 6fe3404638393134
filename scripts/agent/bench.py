"""Benchmark of the agent demo (issue 24): runs scripts/agent/agent.sh on the generated scene
(default 1280x720 at 30 fps for 600 s) and measures, while it runs:

- frames processed per second: the frames objtracker pushed (latencymetrics'
  rtai_pad_buffers_total{element="objtracker0",pad="src"}) over the run, and the frames
  ffmpeg produced in the same time for the ratio;
- event → visible: for every event, the wall time it was first seen in /api/events (polled
  every 0.25 s) minus the time it happened: its event_time (the running time through the
  pipeline clock, i.e. media time); speech segments and leaving objects at their end (they
  are events once they ended; a leave also waits leave-timeout), clip markers when their
  source event happened; P50/P95/max per type and over all;
- peak RSS (VmHWM, sampled every second) of the pipeline process (gst-launch-1.0) and,
  separately, of each peer: MLServer (NudeNet), the runpod handler (pocketsphinx), ffmpeg.

  python3 scripts/agent/bench.py [--duration 600] [--size 1280x720] [--json FILE]
Standard library only. Prints a table (and writes JSON with --json).
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def children(pid):
    out = []
    try:
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        return out
    for k in kids:
        out.append(int(k))
        out.extend(children(int(k)))
    return out


def proc_info(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/status") as f:
            hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
        return cmd, hwm
    except OSError:
        return None, 0


def role(cmd):
    if "gst-launch-1.0" in cmd:
        return "pipeline (gst-launch-1.0)"
    if "mlserver" in cmd:
        return "MLServer + NudeNet"
    if "runpod_asr.py" in cmd:
        return "runpod + pocketsphinx"
    if cmd.startswith("ffmpeg"):
        return "ffmpeg (scene)"
    return None


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=600)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--json")
    args = ap.parse_args()
    port = free_port()
    work = tempfile.mkdtemp(prefix="agent-bench-")
    env = dict(os.environ, RTAI_AGENT_WORK=work)
    env.setdefault("GST_PLUGIN_PATH", os.path.join(ROOT, "target", "release"))
    agent = subprocess.Popen(
        ["bash", os.path.join(ROOT, "scripts/agent/agent.sh"), "--duration", str(args.duration),
         "--size", args.size, "--port", str(port)],
        env=env, stdout=open(os.path.join(work, "agent.out"), "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    seen = {}  # event_id -> (first seen wall ms, event)
    peak = {}  # role -> max VmHWM kB
    frames0 = frames1 = None
    t_first = t_last = None
    next_rss = 0.0
    try:
        while agent.poll() is None:
            now = time.time()
            if now >= next_rss:
                next_rss = now + 1.0
                for pid in children(agent.pid):
                    cmd, hwm = proc_info(pid)
                    r = role(cmd or "")
                    if r:
                        peak[r] = max(peak.get(r, 0), hwm)
            try:
                page = json.loads(get(base + "/api/events?order=desc&limit=200"))
                wall = time.time() * 1000
                for ev in page["events"]:
                    seen.setdefault(ev["event_id"], (wall, ev))
                m = re.search(r'rtai_pad_buffers_total\{[^}]*element="objtracker0"[^}]*pad="src"[^}]*\} (\d+)',
                              get(base + "/metrics"))
                if m:
                    n = int(m.group(1))
                    if frames0 is None:
                        frames0, t_first = n, time.time()
                    frames1, t_last = n, time.time()
            except Exception:
                pass  # not up yet, or ending
            time.sleep(0.25)
    except KeyboardInterrupt:
        agent.send_signal(signal.SIGINT)
        agent.wait()
    # When each event happened (UTC ms): its event time, i.e. its start's media time; a speech
    # segment and a leaving object at their end (they are events once they ended); a clip marker
    # when its source event happened.
    happened = {}
    for eid, (wall, ev) in seen.items():
        if ev["type"] != "clip":
            t = ev["event_time_ms"]
            if ev["type"] in ("speech", "object_leave") and ev.get("end_ns") is not None:
                t += (ev["end_ns"] - ev["start_ns"]) / 1e6
            happened[eid] = t
    lat = {}
    for eid, (wall, ev) in seen.items():
        t = happened.get((ev.get("data") or {}).get("source")) if ev["type"] == "clip" else happened[eid]
        if t is not None:
            lat.setdefault(ev["type"], []).append((wall - t) / 1000)
    every = [x for v in lat.values() for x in v]
    fps = (frames1 - frames0) / (t_last - t_first) if frames0 is not None and t_last > t_first else None
    result = {
        "duration_s": args.duration, "size": args.size,
        "fps_processed": fps,
        "event_to_visible_s": {t: {"n": len(v), "p50": pct(v, 0.5), "p95": pct(v, 0.95), "max": max(v)}
                               for t, v in sorted(lat.items())},
        "event_to_visible_all_p95_s": pct(every, 0.95),
        "peak_rss_mb": {r: round(kb / 1024, 1) for r, kb in sorted(peak.items())},
        "agent_exit": agent.returncode, "work": work,
    }
    print(f"agent bench: {args.size} for {args.duration} s (exit {agent.returncode}), files in {work}")
    print(f"  frames processed per second (objtracker src): {fps:.1f}" if fps else "  frames processed: unknown")
    for t, s in result["event_to_visible_s"].items():
        print(f"  event -> visible in /api/events, {t:<14} n={s['n']:4d}  P50 {s['p50']:.2f} s  P95 {s['p95']:.2f} s  max {s['max']:.2f} s")
    if every:
        print(f"  event -> visible, all events: P95 {result['event_to_visible_all_p95_s']:.2f} s")
    for r, mb in result["peak_rss_mb"].items():
        print(f"  peak RSS {r:<28} {mb:8.1f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    sys.exit(0 if agent.returncode == 0 else 1)


if __name__ == "__main__":
    main()
