"""The ``imaas_model`` path convertor: a segment without ``:``.

``GET /v1/models/{name}`` must never claim ``/v1/models/{name}:predict``, nor
``GET /v1/collections/{collection}`` claim ``/v1/collections/{collection}:search`` (a GET
there is 405 with ``Allow: POST``, as the OpenAPI description says). Imported by the route
modules that use it, which registers it once.
"""

from __future__ import annotations

from starlette.convertors import StringConvertor, register_url_convertor


class SegmentWithoutColon(StringConvertor):
    """A path segment without ``:``."""

    regex = "[^/:]+"


register_url_convertor("imaas_model", SegmentWithoutColon())
