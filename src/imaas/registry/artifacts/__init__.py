"""Where model files live, addressed by their sha256."""
