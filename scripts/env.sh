# Sourced by demo.sh and test.sh: where the files that setup.sh installed live.
export RTAI_PYTHON="$PWD/.venv/bin/python"
site="$(echo "$PWD"/.venv/lib/python3*/site-packages)"
export RTAI_SILERO_MODEL="$site/silero_vad/data/silero_vad.onnx"
ORT_DYLIB_PATH="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)"
export ORT_DYLIB_PATH
