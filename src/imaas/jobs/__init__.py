"""Training jobs: the worker process that runs the queue, and the runner seam (local / Ray)."""
