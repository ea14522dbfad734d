"""maskwatch agent: the runtime a doorway box runs.

The package reads as the data flows: source -> detect -> classify -> track -> alert -> publish.
It never imports TensorFlow or anything from ``convert``; models are described by their sidecar
metadata (docs/model-contract.md).
"""

__version__ = "0.1.0"
