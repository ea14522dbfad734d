"""maskwatch convert: full TensorFlow/Keras models -> int8 TFLite models + sidecar metadata.

TensorFlow is imported only inside this package (and lazily, where a function needs it).
"""
