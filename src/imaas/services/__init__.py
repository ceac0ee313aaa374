"""Use cases the edges (API, CLI) call: model catalog and inference."""
