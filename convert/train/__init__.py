"""Training: the BlazeFace and YuNet detectors, the classifier, fine-tuning on site crops."""
