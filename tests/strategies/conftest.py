"""Fixtures shared by the strategy tests."""

from __future__ import annotations

import secrets

import pytest
import redis as redis_lib


@pytest.fixture
def redis_client(test_redis_url):
    client = redis_lib.Redis.from_url(test_redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A unique Redis key prefix for a test's streams; its keys are deleted afterwards."""
    value = f"test-{secrets.token_hex(4)}:"
    yield value
    keys = list(redis_client.scan_iter(match=value + "*", count=1000))
    if keys:
        redis_client.delete(*keys)
