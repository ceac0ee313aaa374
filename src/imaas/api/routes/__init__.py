"""Thin route modules: parse the request, call a service, shape the answer."""
