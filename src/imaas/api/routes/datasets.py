"""Datasets: upload an archive of labelled images, list datasets, read a version's report.

``POST /v1/datasets/{dataset}`` takes the archive as the raw request body (zip or tar,
optionally gzip/bzip2/xz compressed; the type is read from the bytes), streamed to a
private file as it arrives, never held in memory; ``datasets.max_upload_mib`` bounds it
(413 past it, unread when ``Content-Length`` says so). The cleaning, split and storing run
on a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from imaas.api.deps import DATASETS_READ, DATASETS_WRITE, Principal, services
from imaas.api.openapi import problem_responses
from imaas.domain import NAME_RE, DatasetVersion
from imaas.errors import (
    ArchiveTooLarge,
    DatasetNotFound,
    InvalidArchive,
    InvalidDataset,
    InvalidField,
    InvalidRequest,
    ModelForbidden,
    Overloaded,
    PayloadTooLarge,
)
from imaas.registry.datasets import DatasetRecord
from imaas.schemas.datasets import (
    DatasetDetail,
    DatasetList,
    DatasetPushResult,
    DatasetSummary,
    DatasetVersionInfo,
    split_fractions,
)
from imaas.services.container import Services
from imaas.services.datasets import UPLOAD_PREFIX, SplitSpec

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

DatasetName = Annotated[
    str, Path(description="dataset name", json_schema_extra={"pattern": NAME_RE.pattern}, examples=["digits"])
]
SPLIT_PATTERN = r"^[0-9.]+,[0-9.]+,[0-9.]+$"
CHUNK = 1024 * 1024


def version_info(v: DatasetVersion) -> DatasetVersionInfo:
    """Wire form of a dataset version."""
    return DatasetVersionInfo(
        dataset=v.dataset,
        version=v.version,
        ref=v.ref,
        sha256=v.sha256,
        size_bytes=v.size_bytes,
        created_at=v.created_at,
        created_by=v.created_by,
        description=v.description,
        summary=v.summary,
        report=v.report,
    )


def _summary(d: DatasetRecord) -> DatasetSummary:
    # a listing leaves out each version's cleaning report (it may name every dropped file)
    latest = version_info(d.latest).model_copy(update={"report": {}}) if d.latest is not None else None
    return DatasetSummary(name=d.name, created_at=d.created_at, versions=d.versions, latest=latest)


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> the three fractions (``InvalidField`` naming ``split``)."""
    try:
        return split_fractions(text)
    except ValueError:
        raise InvalidField(f"split: {text[:40]!r} is not three fractions such as 0.8,0.1,0.1") from None


async def _spool(request: Request, directory: str) -> str:
    """Write the request body to a private file as it arrives; returns its path."""
    fd, path = tempfile.mkstemp(prefix=UPLOAD_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                if chunk:
                    await asyncio.to_thread(f.write, chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


@router.post(
    "/{dataset}",
    response_model=DatasetPushResult,
    status_code=201,
    summary="Upload a dataset version (a zip or tar of labelled images)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "an ImageFolder tree (one folder per class) or images with a labels.csv/labels.json "
            "(file,label), as zip or tar (.tar, .tar.gz, .tar.bz2, .tar.xz)",
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("application/zip", "application/x-tar", "application/gzip", "application/octet-stream")
            },
        }
    },
    responses={
        200: {"model": DatasetPushResult, "description": "the same images, labels and split were already a version"},
        **problem_responses(
            InvalidRequest, InvalidArchive, ArchiveTooLarge, PayloadTooLarge, InvalidDataset, InvalidField,
            ModelForbidden, Overloaded,
        ),
    },
)
async def push_dataset(
    dataset: DatasetName,
    request: Request,
    split: Annotated[
        str,
        Query(
            description="train,validation,test fractions", max_length=40, json_schema_extra={"pattern": SPLIT_PATTERN}
        ),
    ] = "0.8,0.1,0.1",
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="seed of the stratified split")] = 0,
    description: Annotated[str, Query(max_length=1000)] = "",
    svc: Services = Depends(services),
    p: Principal = Depends(DATASETS_WRITE),
) -> Any:
    """Unpack the archive (zip-slip, links and zip bombs refused while reading), drop what
    cannot be trained on (the report says what and why), split it by class with ``seed``,
    compute the train split's channel statistics and store it as a new immutable version.
    The same images, labels and split again answer 200 with the existing version."""
    spec = SplitSpec(parse_split(split), seed)
    svc.datasets.check_push(dataset, p, spec, description)  # refuse before reading a byte of the body
    staging = svc.datasets.upload_dir
    with svc.datasets.admission():  # 429 when enough uploads are being received or cleaned already
        await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
        path = await _spool(request, str(staging))
        try:
            version, created, report = await asyncio.to_thread(
                svc.datasets.push_file, dataset, FilePath(path), principal=p, split=spec, description=description
            )
        finally:
            await asyncio.to_thread(os.unlink, path)
    if created:
        await svc.audit.record(p, "dataset.push", version.ref, sha256=version.sha256)
    body = DatasetPushResult(**version_info(version).model_dump(), created=created)
    body.report = report
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("", response_model=DatasetList, summary="List datasets")
async def list_datasets(svc: Services = Depends(services), p: Principal = Depends(DATASETS_READ)) -> DatasetList:
    """Every dataset the key sees, with its newest version."""
    found = await asyncio.to_thread(svc.datasets.list_datasets, p)
    return DatasetList(datasets=[_summary(d) for d in found])


@router.get(
    "/{dataset}",
    response_model=DatasetDetail,
    summary="A dataset and its versions",
    responses=problem_responses(InvalidRequest, DatasetNotFound),
)
async def get_dataset(
    dataset: DatasetName, svc: Services = Depends(services), p: Principal = Depends(DATASETS_READ)
) -> DatasetDetail:
    """The dataset's versions, newest first, each with its summary and cleaning report."""
    versions = await asyncio.to_thread(svc.datasets.versions, p, dataset)
    return DatasetDetail(name=dataset, versions=[version_info(v) for v in versions])


@router.get(
    "/{dataset}/versions/{version}",
    response_model=DatasetVersionInfo,
    summary="One dataset version",
    responses=problem_responses(InvalidRequest, DatasetNotFound),
)
async def get_dataset_version(
    dataset: DatasetName,
    version: Annotated[int, Path(ge=1, le=999_999_999)],
    svc: Services = Depends(services),
    p: Principal = Depends(DATASETS_READ),
) -> DatasetVersionInfo:
    """A version's summary (classes, split counts, statistics) and cleaning report."""
    found = await asyncio.to_thread(svc.datasets.get, p, f"{dataset}@{version}")
    return version_info(found)
