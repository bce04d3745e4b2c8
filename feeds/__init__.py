"""Market data: sources (Upstox, simulated, replay), tick normalisation, the runfeed loop, the
instrument master and the local fake Upstox server."""
