"""Published models rebuilt as Keras (BlazeFace, YuNet, MobileNetV2, the landmark classifier, any chain-shaped int8 .tflite), on one shared graph toolkit."""
