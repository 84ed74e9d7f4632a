"""Shared test setup: tiktoken and WikiText-2 from the verified offline copies in ../shared/data."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
for var, value in [("TIKTOKEN_CACHE_DIR", SHARED_DATA / "tiktoken-cache"), ("GPTLAB_DATA_DIR", SHARED_DATA)]:
    os.environ[var] = os.environ.get(var) or str(value)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The directory holding wikitext-2/ (read-only: never write here)."""
    return Path(os.environ["GPTLAB_DATA_DIR"])


@pytest.fixture(scope="session")
def token_cache_dir(tmp_path_factory) -> Path:
    """One token cache for the whole session, so each real split is tokenized once."""
    return tmp_path_factory.mktemp("token-cache")
