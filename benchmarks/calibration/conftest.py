from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--calibration-readme",
        action="store_true",
        default=False,
        help="Write the calibration table into README.md (between its calibration markers)",
    )
