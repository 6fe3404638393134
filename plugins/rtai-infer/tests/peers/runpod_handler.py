"""A RunPod serverless handler for inferclient's tests, served by the runpod
SDK's local API (--rp_serve_api). Images: finds videotestsrc's white ball in
the JPEG; audio: reports what it received. input.model "slow" waits 3 s (for
cancel tests), "broken" raises."""
import base64
import io
import time

import runpod
from PIL import Image


def handler(job):
    inp = job["input"]
    if inp.get("model") == "broken":
        raise RuntimeError("this handler always fails")
    if inp.get("model") == "slow":
        time.sleep(3)
    if "image" in inp:
        image = Image.open(io.BytesIO(base64.b64decode(inp["image"]))).convert("L")
        w, h = image.size
        pixels = image.load()
        xs = [x for y in range(h) for x in range(w) if pixels[x, y] > 200]
        ys = [y for y in range(h) for x in range(w) if pixels[x, y] > 200]
        detections = []
        if xs:
            detections.append({"box": [min(xs), min(ys), max(xs) + 1, max(ys) + 1], "score": 0.9, "label": "ball"})
        return {"detections": detections, "text": f"jpeg {w}x{h} (input said {inp.get('width')}x{inp.get('height')})"}
    if "audio" in inp:
        wav = base64.b64decode(inp["audio"])
        assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
        return {"text": f"{len(wav) - 44} bytes of audio"}
    return {"error": "no image or audio"}


runpod.serverless.start({"handler": handler})
