"""A KServe v2 REST endpoint that misbehaves on purpose, per model name:
ok (a valid box), flaky (503 then 200, alternating), garbage (not JSON),
shape (a [1, 6] tensor with 5 values). The faults real servers show; MLServer
cannot be made to produce them.

  python kserve_faults.py PORT
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

calls = {"flaky": 0}
lock = threading.Lock()
BOX = {"name": "boxes", "shape": [1, 6], "datatype": "FP32", "data": [4, 4, 20, 20, 0.9, 0]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send(200, {"live": True})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        model = self.path.split("/")[3] if self.path.count("/") >= 4 else ""
        if model == "ok":
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "flaky":
            with lock:
                calls["flaky"] += 1
                n = calls["flaky"]
            if n % 2 == 1:
                return self.send(503, {"error": "overloaded, try again"})
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "garbage":
            return self.send(200, b"<html>not json{", "text/html")
        if model == "shape":
            return self.send(200, {"model_name": model, "outputs": [{"name": "boxes", "shape": [1, 6], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]})
        self.send(404, {"error": f"model {model} not found"})


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
