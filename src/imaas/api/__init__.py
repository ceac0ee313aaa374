"""The HTTP edge: FastAPI app, problem rendering, thin routes."""
