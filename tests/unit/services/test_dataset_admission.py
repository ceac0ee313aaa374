"""At most ``datasets.max_concurrent_uploads`` uploads are received and cleaned at once."""

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
