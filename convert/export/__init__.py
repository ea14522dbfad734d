"""The conversion step: int8 quantization, the sidecar, the representative set, Keras-vs-int8 parity, the detectors' builds."""
