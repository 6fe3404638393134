"""A gateway in front of the runpod SDK's local API (runpod_handler.py) that
plays the parts of RunPod's hosted API the SDK does not have, under
/v2/{mode}/... like the hosted /v2/{endpoint_id}/...:

- mode "async": /runsync answers like the hosted API when a job outlasts its
  wait: the SDK's /run reply, {"id", "status": "IN_PROGRESS"};
- mode "no-runsync": /runsync is 404 (a route the endpoint does not have),
  /run goes to the SDK;
- /status/{id}: the first poll of a job is answered here with
  {"id", "status": "IN_QUEUE", "delayTime"} (the hosted API's reply for a
  queued job); later polls go to the SDK as they came (it answers GET with
  405 and runs the job on POST);
- /cancel/{id}: the SDK has no such route; answered here with the hosted
  API's reply {"id", "status": "CANCELLED"};
- mode "hosted": jobs as the hosted API runs them: /run and /runsync start a
  job (the SDK's /run, then its POST /status runs it in a thread here);
  /runsync waits for it at most ?wait= milliseconds (default 90000) and
  answers COMPLETED or {"id", "status": "IN_PROGRESS"}; /status/{id} answers
  the job's state at once, GET or POST. Every job is counted in "ids".

GET /calls lists every "METHOD path" received and the job ids /run gave out.

  python runpod_gateway.py PORT UPSTREAM_PORT
"""
import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = f"http://127.0.0.1:{sys.argv[2]}"
lock = threading.Lock()
calls = []
ids = []
polled = set()
# mode "hosted": job id -> (threading.Event, [reply bytes])
jobs = {}


def start_job(handler, body):
    """Starts a job on the SDK; returns its id (or None and the SDK's error reply)."""
    code, reply = handler.forward("POST", "/run", body)
    if code != 200:
        return None, (code, reply)
    job = json.loads(reply)["id"]
    done, result = threading.Event(), []

    def run():
        result.append(handler.forward("POST", f"/status/{job}", b"{}")[1])
        done.set()

    with lock:
        ids.append(job)
        jobs[job] = (done, result)
    threading.Thread(target=run, daemon=True).start()
    return job, None


def job_state(job):
    done, result = jobs[job]
    if done.is_set():
        return result[0]
    return json.dumps({"id": job, "status": "IN_PROGRESS"}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def forward(self, method, path, body):
        req = urllib.request.Request(UPSTREAM + path, data=body if method == "POST" else None, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def route(self, method):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        with lock:
            calls.append(f"{method} {self.path}")
        if self.path == "/calls":
            with lock:
                return self.send(200, {"calls": calls, "ids": ids})
        parts = self.path.split("/")
        # ["", "v2", mode, route, (id)]
        if len(parts) < 4 or parts[1] != "v2":
            return self.send(404, {"error": "not found"})
        mode, (route, _, query) = parts[2], parts[3].partition("?")
        job = parts[4] if len(parts) > 4 else ""
        if mode == "hosted" and route in ("run", "runsync"):
            job, error = start_job(self, body)
            if job is None:
                return self.send(*error)
            if route == "runsync":
                wait = 90000
                if query.startswith("wait="):
                    wait = int(query[len("wait="):])
                jobs[job][0].wait(wait / 1000)
                return self.send(200, job_state(job))
            return self.send(200, {"id": job, "status": "IN_QUEUE"})
        if mode == "hosted" and route == "status":
            if job not in jobs:
                return self.send(404, {"error": f"no job {job}"})
            return self.send(200, job_state(job))
        if route == "runsync" and mode == "no-runsync":
            return self.send(404, {"error": "not found"})
        if route in ("run", "runsync"):
            code, reply = self.forward("POST", "/run", body)
            if code == 200:
                with lock:
                    ids.append(json.loads(reply)["id"])
            return self.send(code, reply)
        if route == "status":
            with lock:
                first = job not in polled
                polled.add(job)
            if first:
                return self.send(200, {"id": job, "status": "IN_QUEUE", "delayTime": 0})
            return self.send(*self.forward(method, f"/status/{job}", body))
        if route == "cancel":
            return self.send(200, {"id": job, "status": "CANCELLED"})
        self.send(404, {"error": "not found"})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up (a cancel aborts its poll): nothing to report.
        pass


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
