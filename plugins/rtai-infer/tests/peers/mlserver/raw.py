"""MLServer runtimes that serve ONNX models from registry packages raw: the
request's tensor goes to the onnxruntime session unchanged, and the model's own
outputs come back with the model's names and shapes. No decoding here: that is
the element's job (box-format), and the tests compare it with a numpy reference."""
import os

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


def rapidocr_model(name):
    import rapidocr_onnxruntime

    return os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models", name)


class RawOnnx(MLModel):
    MODEL = ""

    async def load(self):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(rapidocr_model(self.MODEL), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        results = self.session.run(None, {self.input: x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self.output_names, results)],
        )


class TextDirection(RawOnnx):
    """PP-OCR's text direction classifier: x [N, 3, 48, 192] -> [N, 2] (0 and 180 degrees)."""

    MODEL = "ch_ppocr_mobile_v2.0_cls_infer.onnx"


class TextDetectorRaw(RawOnnx):
    """PP-OCRv4's text detector: x [N, 3, H, W] -> a probability map [N, 1, H, W]."""

    MODEL = "ch_PP-OCRv4_det_infer.onnx"
