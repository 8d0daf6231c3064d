"""The brokers the MQTT tests run against: robustmq (procs.RobustMQ) and, for differential tests,
Debian's mosquitto. Also Debian's command-line clients (mosquitto_pub/sub/rr).

Debian packages that are missing are installed with apt-get (CI runs as root, and .ci/run installs
them anyway); if that fails the test fails loudly — it never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from procs import free_port, stop_process, wait_port

USER, PASSWORD = "alice", "s3cret"  # the credentials of the brokers started with auth=True


def debian_binary(name: str, package: str) -> str:
    """The path of `name` from Debian's `package`, installed with apt-get if missing."""
    def find() -> str | None:
        for cand in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
            if cand and os.path.exists(cand):
                return cand
        return None

    found = find()
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.fail(f"{name} is not installed and apt-get is not available: apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(["apt-get", "install", "-y", package], capture_output=True, env=env, timeout=300)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=300)
        res = subprocess.run(["apt-get", "install", "-y", package], capture_output=True, env=env, timeout=300)
    found = find()
    if found:
        return found
    pytest.fail(f"could not install {package} with apt-get: " + res.stderr.decode(errors="replace")[-500:])


def mosquitto_binary() -> str:
    return debian_binary("mosquitto", "mosquitto")


class Mosquitto:
    """A mosquitto on 127.0.0.1:<free port>, no persistence, its config in a temp dir; anonymous, or
    (auth=True) only USER with PASSWORD."""

    def __init__(self, auth: bool = False) -> None:
        self.port = free_port()
        self.auth = auth
        self.dir = tempfile.mkdtemp(prefix="mosquitto-test-")
        os.chmod(self.dir, 0o755)  # mosquitto drops root for its own user and must read the config
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        conf = Path(self.dir) / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning"]
        if self.auth:
            pwfile = Path(self.dir) / "passwd"
            subprocess.run([debian_binary("mosquitto_passwd", "mosquitto"), "-b", "-c", str(pwfile), USER,
                            PASSWORD], check=True, capture_output=True, timeout=30)
            os.chmod(pwfile, 0o644)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n")
        os.chmod(conf, 0o644)
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
