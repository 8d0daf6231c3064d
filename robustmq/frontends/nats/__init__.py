"""The NATS client protocol: codec (sans-IO), session (asyncio), server (listener + ping timer)."""
