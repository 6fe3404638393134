"""A RunPod serverless handler for inferclient's tests, served by the runpod
SDK's local API (--rp_serve_api). Images: finds videotestsrc's white ball in
the JPEG, or with input.model "text" runs the PP-OCRv4 text detector (the ONNX
model inside rapidocr-onnxruntime, the same one MLServer serves); audio:
reports what it received, or with input.model "sphinx" transcribes it with
pocketsphinx's English model and the JSGF grammar in input.prompt.
input.model "slow" waits 3 s (for cancel tests), "broken" raises, "echo"
returns the base64 image as received."""
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
    if "image" in inp and inp.get("model") == "echo":
        return {"text": inp["image"]}
    if "image" in inp and inp.get("model") == "text":
        import sys, os
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "mlserver"))
        import numpy as np
        from ocr import ocr_session, ocr_text_boxes
        global SESSION
        if "SESSION" not in globals():
            SESSION = ocr_session()
        rgb = Image.open(io.BytesIO(base64.b64decode(inp["image"]))).convert("RGB")
        w, h = rgb.size
        side = 32 * ((max(w, h) + 31) // 32)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(rgb, (0, 0))
        tensor = (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
        boxes = ocr_text_boxes(SESSION, tensor)
        return {"detections": [{"box": [float(v) for v in b[:4]], "score": float(b[4]), "label": "text"} for b in boxes]}
    if "audio" in inp and inp.get("model") == "sphinx":
        from pocketsphinx import Decoder

        wav = base64.b64decode(inp["audio"])
        decoder = Decoder(samprate=16000, lm=None)
        decoder.add_jsgf_string("grammar", inp["prompt"])
        decoder.activate_search("grammar")
        decoder.start_utt()
        decoder.process_raw(wav[44:], full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return {"text": hyp.hypstr if hyp else ""}
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
