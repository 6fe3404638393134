"""PP-OCRv4 text detection with the ONNX model inside rapidocr-onnxruntime, shared by
the MLServer runtime and the RunPod handler (no MLServer import here)."""
import numpy as np


def ocr_text_boxes(session, rgb01):
    """PP-OCRv4 text detection (the ONNX model inside rapidocr-onnxruntime) on a
    [1, 3, H, W] RGB tensor in 0..1: boxes [N, 6] in input pixels, class 0 (text)."""
    import cv2

    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
    x = ((rgb01[:, ::-1, :, :] - mean) / std).astype(np.float32)  # the model was trained on BGR
    prob = session.run(None, {"x": x})[0][0, 0]
    mask = (prob > 0.3).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for c in contours:
        x0, y0, w, h = cv2.boundingRect(c)
        if w * h < 16:
            continue
        score = float(prob[y0 : y0 + h, x0 : x0 + w].mean())
        # DB models predict shrunk text kernels: grow them back (unclip), as PP-OCR does.
        pad = 0.4 * h
        boxes.append([x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad, score, 0])
    return np.array(boxes, dtype=np.float32).reshape(-1, 6)


def ocr_session():
    import os

    import onnxruntime
    import rapidocr_onnxruntime

    path = os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models", "ch_PP-OCRv4_det_infer.onnx")
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
