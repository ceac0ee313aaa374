"""Bounded places: at most ``datasets.max_concurrent_uploads`` uploads and ``jobs.max_streams``
event streams at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imaas.errors import Overloaded
from imaas.services.datasets import DatasetService
from imaas.settings import DatasetSettings


def test_past_the_limit_an_upload_is_told_to_come_back_and_a_freed_place_is_reused(tmp_path: Path) -> None:
    none: Any = None
    service = DatasetService(none, none, DatasetSettings(max_concurrent_uploads=2), tmp_path)
    with service.admission(), service.admission():
        with pytest.raises(Overloaded) as refused, service.admission():
            pass
        assert refused.value.retry_after == 5.0
    with service.admission(), service.admission():  # both places came back
        pass


def test_job_event_streams_are_bounded_and_a_place_comes_back_once() -> None:
    from imaas.services.training import TrainingService

    none: Any = None
    service = TrainingService(none, none, none, max_streams=2)
    first, second = service.open_stream(), service.open_stream()
    with pytest.raises(Overloaded):
        service.open_stream()
    first()
    first()  # a second release of the same place gives nothing more back
    third = service.open_stream()
    with pytest.raises(Overloaded):
        service.open_stream()
    second()
    third()
