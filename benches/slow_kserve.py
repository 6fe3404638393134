"""A KServe v2 REST endpoint that answers every /infer after a fixed delay with one
decoded box: the benchmark's stand-in for a remote GPU detector 200 ms away.

  python slow_kserve.py PORT DELAY_MS
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = int(sys.argv[2]) / 1000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(DELAY)
        body = json.dumps({"model_name": "m", "outputs": [{"name": "boxes", "shape": [1, 6], "datatype": "FP32", "data": [10, 10, 50, 50, 0.9, 0]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
