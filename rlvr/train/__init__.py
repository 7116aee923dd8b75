"""The driver: controller loop, run, scoring, step metrics, evaluation, checkpoints, metrics."""
