"""Shared test fixtures. Tests talk to the real Redis on REDIS_URL (started by .ci/run)."""
