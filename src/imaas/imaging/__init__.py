"""Safe image decoding and pure pre-processing transforms."""
