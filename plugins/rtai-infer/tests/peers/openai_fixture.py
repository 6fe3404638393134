"""A stand-in for an OpenAI-compatible server (no real one runs on this machine
within CI time: llama-cpp-python builds for ~9 min, see ../shared/reference.md).
It checks the request the way the API documents it and answers what it saw.

  python openai_fixture.py PORT
"""
import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Authorization") != "Bearer sk-test":
            return self.reply(401, {"error": {"message": "Incorrect API key provided"}})
        if self.path == "/v1/chat/completions":
            req = json.loads(body)
            messages = req["messages"]
            parts = messages[-1]["content"]
            images = [p for p in parts if p["type"] == "image_url"]
            for p in images:
                url = p["image_url"]["url"]
                assert url.startswith("data:image/jpeg;base64,"), url[:40]
                assert base64.b64decode(url.split(",", 1)[1])[:2] == b"\xff\xd8", "not a JPEG"
            prompt = next(p["text"] for p in parts if p["type"] == "text")
            if prompt == "echo":
                # The image as received, to check what the element sent.
                return self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": images[-1]["image_url"]["url"]}}]})
            previous = [m["content"] for m in messages[:-1] if m["role"] == "assistant"]
            text = f"{len(images)} frames, prompt '{prompt}', previous: {previous[0] if previous else 'none'}"
            return self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
        if self.path == "/v1/audio/transcriptions":
            ctype = self.headers.get("Content-Type", "")
            boundary = ctype.split("boundary=", 1)[1].encode()
            fields = {}
            for part in body.split(b"--" + boundary):
                head, _, value = part.partition(b"\r\n\r\n")
                if b'name="' in head:
                    name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
                    fields[name] = value.rstrip(b"\r\n")
            wav = fields["file"]
            assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE", "not a WAV file"
            return self.reply(200, {"text": f"{len(wav) - 44} bytes for {fields['model'].decode()}"})
        self.reply(404, {"error": {"message": "unknown path"}})


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
