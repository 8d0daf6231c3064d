"""SPEC §4: each of the seed article's eight scenarios works end to end with an unmodified NATS client.
Every script in examples/ runs as a subprocess against a real robustmq and must exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = [
    "01_subagent_result.py",
    "02_worker_status_public.py",
    "03_competing_workers.py",
    "04_alert_broadcast.py",
    "05_offline_edge_priority.py",
    "06_human_approval.py",
    "07_async_request_reply.py",
    "08_capability_discovery.py",
]


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("0*.py")) == SCRIPTS
    readme = (EXAMPLES / "README.md").read_text()
    assert all(s in readme for s in SCRIPTS)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(server, script: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), server.nats_url],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "OK:" in proc.stdout, proc.stdout
