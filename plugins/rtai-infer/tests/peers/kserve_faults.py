"""A KServe v2 REST endpoint that misbehaves on purpose, per model name:
ok (a valid box), flaky (503 then 200, alternating), garbage (not JSON),
shape (a [1, 6] tensor with 5 values), binary (Triton's binary tensor extension:
checks the raw input against its JSON header and answers with a raw output). The faults real servers show; MLServer
cannot be made to produce them.

  python kserve_faults.py PORT
"""
import json
import struct
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
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        model = self.path.split("/")[3] if self.path.count("/") >= 4 else ""
        if model == "binary":
            n = int(self.headers["Inference-Header-Content-Length"])
            header, raw = json.loads(body[:n]), body[n:]
            (tensor,) = header["inputs"]
            expected = 4 * tensor["shape"][0] * tensor["shape"][1] * tensor["shape"][2] * tensor["shape"][3]
            if tensor["parameters"]["binary_data_size"] != len(raw) or len(raw) != expected:
                return self.send(400, {"error": f"binary input of {len(raw)} bytes, header says {tensor['parameters']['binary_data_size']}"})
            if not header.get("parameters", {}).get("binary_data_output"):
                return self.send(400, {"error": "binary_data_output not requested"})
            values = struct.pack("<6f", 4, 4, 20, 20, 0.9, 0)
            reply = json.dumps({"model_name": model, "outputs": [{"name": "boxes", "shape": [1, 6], "datatype": "FP32", "parameters": {"binary_data_size": len(values)}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Inference-Header-Content-Length", str(len(reply)))
            self.send_header("Content-Length", str(len(reply) + len(values)))
            self.end_headers()
            self.wfile.write(reply + values)
            return
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
