# Shared by scripts/agent/agent.sh and gst-launch-examples/voice-agent.sh (sourced, bash).
# Needs $root (the repository) and $python (a python3 for the helpers).

# A free TCP port on loopback.
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# pick_port PORT: PORT if it is free on loopback, else a free one.
pick_port() {
  "$python" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' "$1"
}

# wait_http URL WHAT [SECONDS]: polls URL until it answers 2xx, or exits with a message.
wait_http() {
  "$python" - "$1" "$2" "${3:-90}" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit(f"{sys.argv[2]} did not come up ({sys.argv[1]})")
        time.sleep(0.25)
PY
}

# start_asr LOGFILE: speech recognition, pocketsphinx 5.1.1 (its wheel's US English models)
# behind the runpod SDK's local API (scripts/agent/runpod_asr.py), as inferclient's tests run
# RunPod handlers. Sets asr_port and asr_pid (the server process, to kill at the end); wait for
# it with: wait_http "http://127.0.0.1:$asr_port/openapi.json" "runpod local API" 60
start_asr() {
  asr_port="$(free_port)"
  "$root/.venv-runpod/bin/python" "$root/scripts/agent/runpod_asr.py" --rp_serve_api \
    --rp_api_host 127.0.0.1 --rp_api_port "$asr_port" >"$1" 2>&1 &
  asr_pid=$!
}
