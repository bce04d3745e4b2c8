"""A local fake Upstox: REST endpoints and WebSocket feeds in Upstox's wire formats, so the real
SDK can be tested and demonstrated offline. It never contacts the real broker."""

from feeds.upstox.fake.server import FakeUpstox

__all__ = ["FakeUpstox"]
