"""HTTP monitoring endpoints (nats-server style /varz, /connz, /subsz, /healthz, plus /metrics)."""
