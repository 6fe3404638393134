"""MLServer runtimes for inferclient's tests: a real (tiny) detector for
videotestsrc's white ball on black, a slow one and a broken one."""
import asyncio

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from ocr import ocr_session, ocr_text_boxes


def find_ball(tensor):
    """[1, 3, H, W] in 0..1 → [[x1, y1, x2, y2, score, class]] around bright pixels."""
    image = tensor[0]
    bright = (image > 0.8).all(axis=0)
    ys, xs = np.nonzero(bright)
    if len(xs) == 0:
        return np.zeros((0, 6), dtype=np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 0]], dtype=np.float32)


class BallDetector(MLModel):
    async def load(self):
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = NumpyCodec.decode_input(payload.inputs[0])
        if tensor.shape[0] > 1:
            # A batch: [N, 1, 6], one row per image (score 0 where there is no ball).
            boxes = np.zeros((tensor.shape[0], 1, 6), dtype=np.float32)
            for i in range(tensor.shape[0]):
                found = find_ball(tensor[i : i + 1])
                if len(found):
                    boxes[i, 0] = found[0]
        else:
            boxes = find_ball(tensor)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("boxes", boxes)])


class SplitBallDetector(MLModel):
    """The ball as three tensors under unusual names (as a Triton ensemble might answer):
    inferclient reads them only by the names its model-settings.json declares."""

    async def load(self):
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        found = find_ball(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("OUTPUT_BOXES", found[:, :4]),
                NumpyCodec.encode_output("output_confidences", found[:, 4]),
                NumpyCodec.encode_output("output_class_ids", found[:, 5].astype(np.int64)),
            ],
        )


class SlowDetector(BallDetector):
    async def predict(self, payload):
        await asyncio.sleep(2.0)
        return await super().predict(payload)


class BrokenDetector(MLModel):
    async def load(self):
        return True

    async def predict(self, payload):
        raise RuntimeError("this model always fails")


class TextDetector(MLModel):
    async def load(self):
        self.session = ocr_session()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("boxes", ocr_text_boxes(self.session, tensor))])
