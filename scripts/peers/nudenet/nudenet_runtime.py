"""An MLServer runtime that serves NudeNet's YOLOv8n detector (nudenet/320n.onnx from PyPI
`nudenet` 3.4.2, installed --no-deps into the workspace's .venv by scripts/setup.sh) raw: the
model's own output `output0` [N, 22, 2100] (cx, cy, w, h in input pixels and 18 class scores per
anchor; labels.txt beside this file) goes back unchanged, for inferclient box-format=yolov8 to
decode. No decoding here.

The input may come as inferclient sends it in any of these KServe v2 datatypes:
- FP32 [N, 3, H, W], RGB in 0..1 (the model's own input, passed through);
- FP16 [N, 3, H, W] (cast to FP32), UINT8 [N, 3, H, W] RGB 0..255 (scaled to 0..1), as a
  server-side preprocessing step of a Triton ensemble would;
- BYTES [N] of JPEG images (raw over gRPC, base64 strings in REST JSON), decoded here and letterboxed (centred, grey 114) into 320x320 as
  inferclient's resize=letterbox does, so the boxes map back the same way.

With `"parameters": {"extra": {"strict": true}}` in model-settings.json the runtime refuses
(HTTP 400) a request whose input datatype or shape differs from the declared `inputs` (the
tests use that to prove what inferclient sent).

Serve it alone with
    PYTHONPATH=scripts/peers/nudenet .venv-mlserver/bin/mlserver start scripts/peers/nudenet
(model name `nudenet`). NUDENET_ONNX overrides where the model file is looked for."""
import base64
import glob
import os

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

SIZE = 320
HERE = os.path.dirname(os.path.abspath(__file__))
WORKSPACE = os.path.normpath(os.path.join(HERE, "..", "..", ".."))


def nudenet_onnx():
    """Where 320n.onnx is: $NUDENET_ONNX, an importable nudenet, or the workspace's .venv."""
    if os.environ.get("NUDENET_ONNX"):
        return os.environ["NUDENET_ONNX"]
    import importlib.util

    spec = importlib.util.find_spec("nudenet")
    candidates = [os.path.join(p, "320n.onnx") for p in (spec.submodule_search_locations or [])] if spec else []
    candidates += sorted(glob.glob(os.path.join(WORKSPACE, ".venv", "lib", "python3*", "site-packages", "nudenet", "320n.onnx")))
    for c in candidates:
        if os.path.exists(c):
            return c
    raise FileNotFoundError("nudenet/320n.onnx not found: scripts/setup.sh installs nudenet into .venv")


def letterbox_jpeg(jpeg):
    import cv2

    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a JPEG image")
    h, w = bgr.shape[:2]
    scale = min(SIZE / w, SIZE / h)
    nw, nh = round(w * scale), round(h * scale)
    out = np.full((SIZE, SIZE, 3), 114, np.uint8)
    x, y = (SIZE - nw) // 2, (SIZE - nh) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0


class NudeNet(MLModel):
    async def load(self):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(nudenet_onnx(), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    def model_input(self, tensor):
        if tensor.datatype == "BYTES":
            jpegs = tensor.data.root if hasattr(tensor.data, "root") else tensor.data
            if isinstance(jpegs, (bytes, str)):
                jpegs = [jpegs]
            # gRPC bytes_contents arrive as bytes; REST JSON strings are base64 (MLServer's
            # content_type "base64", as inferclient writes them).
            return np.stack([letterbox_jpeg(j if isinstance(j, bytes) else base64.b64decode(j)) for j in jpegs])
        x = NumpyCodec.decode_input(tensor)
        if tensor.datatype == "UINT8":
            return x.astype(np.float32) / 255.0
        return x.astype(np.float32)

    def check_declared(self, tensor):
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        if not extra.get("strict") or not self.settings.inputs:
            return
        declared = self.settings.inputs[0]
        same_shape = len(declared.shape) == len(tensor.shape) and all(
            d in (-1, t) for d, t in zip(declared.shape, tensor.shape)
        )
        if tensor.name != declared.name or tensor.datatype != declared.datatype or not same_shape:
            from mlserver.errors import MLServerError

            raise MLServerError(
                f"expected {declared.name} {declared.datatype} {declared.shape}, "
                f"got {tensor.name} {tensor.datatype} {tensor.shape}",
                status_code=400,
            )

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.check_declared(payload.inputs[0])
        x = self.model_input(payload.inputs[0])
        results = self.session.run(None, {self.input: x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self.output_names, results)],
        )
