"""Metrics and the model card: detector and classifier evaluation."""
