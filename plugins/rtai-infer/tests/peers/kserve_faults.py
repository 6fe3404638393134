"""A KServe v2 REST endpoint that misbehaves on purpose, per model name:
ok (a valid box), flaky (503 then 200, alternating), garbage (not JSON),
shape (a [1, 6] tensor with 5 values), binary (Triton's binary tensor extension:
checks the raw input against its JSON header and answers with a raw output),
empty (no boxes), classes (boxes of class 2 and 7), ratelimited (429 then 200,
alternating), stalling (odd calls answer after 3 s, even ones at once: for
request timeouts), recovering (HTTP 500 twice, then valid boxes), probe-hangs
(HTTP 500 once, then a call that answers only after 30 s, then valid boxes),
rejects-second (its second call is refused with HTTP 400, as a server refuses one
request's payload; the others answer valid boxes), retry-after (429 with
Retry-After: 1 then 200, alternating), forbidden (HTTP 403 always).
named (the three-tensor layout torchvision exports and TF OD API servers and Triton
ensembles answer: boxes FP32 [N, 4], scores FP32 [N], labels BYTES [N]).
The faults real servers show; MLServer cannot be made to produce them.

  python kserve_faults.py PORT
"""
import json
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

calls = {}
lock = threading.Lock()
BOX = {"name": "boxes", "shape": [1, 6], "datatype": "FP32", "data": [4, 4, 20, 20, 0.9, 0]}


def count(model):
    """This model's calls so far, this one included (1-based)."""
    with lock:
        calls[model] = calls.get(model, 0) + 1
        return calls[model]


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
        # GET /calls/MODEL: how often MODEL was called (tests wait on it).
        if self.path.startswith("/calls/"):
            with lock:
                return self.send(200, {"calls": calls.get(self.path[len("/calls/"):], 0)})
        self.send(200, {"live": True})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        model = self.path.split("/")[3] if self.path.count("/") >= 4 else ""
        if model == "binary":
            n = int(self.headers["Inference-Header-Content-Length"])
            header, raw = json.loads(body[:n]), body[n:]
            (tensor,) = header["inputs"]
            if tensor["datatype"] == "BYTES":
                # Each element after its 4-byte length; each must be a whole JPEG.
                items, at = [], 0
                while at + 4 <= len(raw):
                    (size,) = struct.unpack_from("<I", raw, at)
                    items.append(raw[at + 4 : at + 4 + size])
                    at += 4 + size
                whole = at == len(raw) and len(items) == tensor["shape"][0]
                if not whole or not all(i[:2] == b"\xff\xd8" and i[-2:] == b"\xff\xd9" for i in items):
                    return self.send(400, {"error": "BYTES input is not length-prefixed JPEG images"})
                expected = len(raw)
            else:
                size = {"FP32": 4, "FP16": 2, "UINT8": 1}[tensor["datatype"]]
                expected = size * tensor["shape"][0] * tensor["shape"][1] * tensor["shape"][2] * tensor["shape"][3]
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
            if count(model) % 2 == 1:
                return self.send(503, {"error": "overloaded, try again"})
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "ratelimited":
            if count(model) % 2 == 1:
                self.send_response(429)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "stalling":
            if count(model) % 2 == 1:
                time.sleep(3)
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "recovering":
            if count(model) <= 2:
                return self.send(500, {"error": "warming up"})
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "probe-hangs":
            n = count(model)
            if n == 1:
                return self.send(500, {"error": "down"})
            if n == 2:
                time.sleep(30)
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "rejects-second":
            if count(model) == 2:
                return self.send(400, {"error": "input too long for this model"})
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "retry-after":
            if count(model) % 2 == 1:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.send(200, {"model_name": model, "outputs": [BOX]})
        if model == "forbidden":
            return self.send(403, {"error": "bad key"})
        if model == "named":
            return self.send(200, {"model_name": model, "outputs": [
                {"name": "boxes", "shape": [2, 4], "datatype": "FP32", "data": [4, 4, 20, 20, 22, 2, 30, 10]},
                {"name": "scores", "shape": [2], "datatype": "FP32", "data": [0.9, 0.1]},
                {"name": "labels", "shape": [2], "datatype": "BYTES", "data": ["ball", "dog"]},
            ]})
        if model == "empty":
            return self.send(200, {"model_name": model, "outputs": [{"name": "boxes", "shape": [0, 6], "datatype": "FP32", "data": []}]})
        if model == "classes":
            boxes = [4, 4, 20, 20, 0.9, 2, 22, 2, 30, 10, 0.8, 7]
            return self.send(200, {"model_name": model, "outputs": [{"name": "boxes", "shape": [2, 6], "datatype": "FP32", "data": boxes}]})
        if model == "garbage":
            return self.send(200, b"<html>not json{", "text/html")
        if model == "shape":
            return self.send(200, {"model_name": model, "outputs": [{"name": "boxes", "shape": [1, 6], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]})
        self.send(404, {"error": f"model {model} not found"})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up on a stalled call (its timeout, a flush): nothing to report.
        pass


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
