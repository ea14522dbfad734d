"""Training data: classifier crops, detector scenes, synthetic masks, site crops."""
