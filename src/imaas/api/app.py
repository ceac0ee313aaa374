"""``create_app(settings)``: the FastAPI application of one imaas process.

The registry is opened (and migrated) when the app starts, production models load in the
background, and ``/readyz`` turns 200 once they are all loaded.

Example::

    app = create_app(Settings(home=Path("/tmp/imaas")))
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from imaas import __version__
from imaas.api import openapi, problems
from imaas.api.auth import Authenticate
from imaas.api.fastpath import PredictFastPath
from imaas.api.middleware import BodyLimit, RequestContext, SecurityHeaders
from imaas.api.responses import FastJSONResponse
from imaas.api.routes import collections, datasets, health, jobs, keys, lifecycle, models, oip, predict
from imaas.errors import ImaasError
from imaas.services.container import Services, build_services
from imaas.settings import Settings

log = logging.getLogger("imaas.api")

DESCRIPTION = """
imaas serves ONNX vision models over HTTP.

* `POST /v1/models/{name}:predict` classifies images sent as the raw body
  (`Content-Type: image/jpeg`), as multipart files or as base64 JSON.
* `GET /v1/models` lists the catalog; `POST /v1/models/{name}/versions` pushes a version.
* `POST /v1/datasets/{dataset}` uploads labelled images (a zip or tar); `POST /v1/jobs` trains
  a model on them, `GET /v1/jobs/{id}/events` follows the job (Server-Sent Events) and the
  evaluated version is registered as `staging`.
* Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
"""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app; ``services`` may be injected (tests), else built from ``settings`` at startup."""
    settings = settings or Settings()
    settings.check_safe()  # never unauthenticated on a network

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        svc: Services = services if services is not None else await asyncio.to_thread(build_services, settings)
        app.state.services = svc
        if settings.auth.enabled:
            try:
                written = await asyncio.to_thread(svc.keys.ensure_admin_key, settings.admin_key_file)
            except ImaasError as exc:
                log.error("%s", exc.detail)
                if owned:
                    await svc.close()
                raise
            if written is not None:
                log.warning(
                    "first start: an admin API key (every scope) was written to %s (readable only by you)", written
                )
        else:
            log.warning(
                "AUTHENTICATION IS OFF (auth.enabled=false): every caller on %s may do everything; "
                "for local development only",
                settings.server.host,
            )
        grpc_server = None
        if settings.server.grpc_port is not None:
            from imaas.api.grpc_server import start_grpc

            try:
                grpc_server, app.state.grpc_port = await start_grpc(
                    svc, settings.server.host, settings.server.grpc_port
                )
            except OSError as exc:
                log.error("%s", exc)  # one readable line before uvicorn's startup-failure report
                if owned:
                    await svc.close()
                raise
        await svc.start()  # change feed and idle-version checks (stopped by svc.close)
        warm: asyncio.Task[None] | None = None
        if settings.runtime.load_on_startup:
            warm = asyncio.create_task(svc.inference.warm())
        else:
            svc.inference.assume_warm()
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            if warm is not None and not warm.done():
                warm.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warm
            if owned:
                await svc.close()

    app = FastAPIOffline(
        title="imaas",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        # FastAPI's OpenTelemetry hooks cost ~20 us a request even with no provider set
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    problems.install(app)
    openapi.install(app, settings)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(lifecycle.router)
    app.include_router(predict.router)
    app.include_router(oip.router)
    app.include_router(keys.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(collections.router)

    upload_limit = settings.server.max_upload_bytes
    body_limit = settings.server.max_body_bytes

    dataset_limit = settings.datasets.max_upload_mib * 1024 * 1024

    def limit_for(path: str) -> int:
        if path.startswith("/v1/datasets/"):
            return dataset_limit
        return upload_limit if path.endswith("/versions") else body_limit

    app.add_middleware(PredictFastPath)
    app.add_middleware(Authenticate, enabled=settings.auth.enabled, refusal_delay_s=settings.auth.refusal_delay_s)
    app.add_middleware(BodyLimit, limit_for=limit_for)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestContext)
    return app
