"""Fast JSON responses (orjson handles numpy scalars and datetimes natively)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    """``application/json`` rendered with orjson."""

    def render(self, content: Any) -> bytes:
        """Serialize ``content`` (numpy values included)."""
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ProblemResponse(FastJSONResponse):
    """RFC 9457 ``application/problem+json``."""

    media_type = "application/problem+json"
