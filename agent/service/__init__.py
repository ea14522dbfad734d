"""The daemon around the pipeline: run (supervise, reload, signals), sd_notify, the live preview, install."""
