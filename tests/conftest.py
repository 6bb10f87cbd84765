"""Shared fixtures: the demo shop on a real SQLite ledger in tmp_path, and its HTTP API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import pos_loyalty.ledger.store as ledger_store
from pos_loyalty.api import create_app
from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import Settings, load_settings
from pos_loyalty.service import Service

# Every customer state served from the ledger's state cache is compared with the one read
# from the projection tables, in this process and in the processes tests start.
os.environ["POS_LOYALTY_CHECK_STATE_CACHE"] = "1"
ledger_store.CHECK_STATE_CACHE = True


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The embedded demo shop with its ledger in ``tmp_path``."""
    return load_settings(None, data_dir=tmp_path)


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    svc = open_service(settings)
    try:
        yield svc
    finally:
        svc.ledger.close()


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a 5xx must show up as a response, not as a test crash.
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c
