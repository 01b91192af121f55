"""Fixtures of the image log tests: fresh logs of each backend (see image_log_config)."""

from __future__ import annotations

import pytest

from imagelog import ImageLog, ImageLogConfig, open_image_log


@pytest.fixture
def open_log(image_log_config):
    opened: list[ImageLog] = []

    def open_(**overrides: object) -> ImageLog:
        log = open_image_log(ImageLogConfig(**{**image_log_config, **overrides}))
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


@pytest.fixture
def log(open_log) -> ImageLog:
    return open_log()
