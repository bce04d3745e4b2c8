"""Fixtures shared by the feed tests."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings


@pytest.fixture
def prefix():
    """A unique Redis key prefix (streams, status, snapshots); its keys are deleted afterwards."""
    p = f"t{uuid.uuid4().hex[:10]}."
    yield p
    r = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(r.scan_iter(match=f"{p}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()
