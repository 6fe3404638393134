"""The demo's speech recogniser: a RunPod serverless handler served by the runpod
SDK's local API (--rp_serve_api), as inferclient's tests run it. Audio (a WAV per
speech segment from inferclient protocol=runpod) is transcribed by pocketsphinx
5.1.1 with the US English acoustic model, language model and dictionary the
PyPI wheel ships; a prompt that starts with "#JSGF" is used as a grammar instead.
"""
import base64
import io
import wave

import runpod
from pocketsphinx import Decoder

DECODERS = {}


def decoder(rate):
    if rate not in DECODERS:
        DECODERS[rate] = Decoder(samprate=rate, loglevel="ERROR")
    return DECODERS[rate]


def handler(job):
    inp = job["input"]
    if "audio" not in inp:
        return {"error": "this endpoint transcribes audio only"}
    with wave.open(io.BytesIO(base64.b64decode(inp["audio"]))) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            return {"error": "16-bit mono WAV expected"}
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    prompt = inp.get("prompt") or ""
    if prompt.startswith("#JSGF"):
        d = Decoder(samprate=rate, lm=None, loglevel="ERROR")
        d.add_jsgf_string("grammar", prompt)
        d.activate_search("grammar")
    else:
        d = decoder(rate)
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    return {"text": hyp.hypstr if hyp else "", "model": "pocketsphinx-en-us"}


runpod.serverless.start({"handler": handler})
