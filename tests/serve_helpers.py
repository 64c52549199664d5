"""Starting and stopping a real ``lgfa serve`` on loopback, on free ports, bounded in time."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_SECONDS = 240.0
STOP_SECONDS = 90.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on now."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def lgfa_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lgfa_deploy.cli", *args]


def lgfa_env() -> dict[str, str]:
    """The environment of a child ``lgfa``: this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@dataclass
class ServerProcess:
    """A running ``lgfa serve`` (or ``tritonserver``) and where it listens."""

    process: subprocess.Popen
    grpc_port: int
    http_port: int
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def wait_ready(self, models: tuple[str, ...]) -> None:
        """Until every model answers ready over gRPC; a server that exits or takes too long fails the test."""
        import tritonclient.grpc as grpc

        deadline = time.monotonic() + START_SECONDS
        client = grpc.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
                try:
                    if all(client.is_model_ready(model) for model in models):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.5)
        finally:
            client.close()
        self.stop()
        raise AssertionError(f"the server was not ready within {START_SECONDS:g} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after STOP_SECONDS)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_serve(bundle: Path, log: Path, *extra: str) -> ServerProcess:
    """``lgfa serve --bundle`` on three free loopback ports, its output in ``log``; not yet ready."""
    grpc_port, http_port, metrics_port = free_ports(3)
    command = lgfa_command(
        "serve", "--bundle", str(bundle), "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--metrics-port", str(metrics_port), *extra,
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=lgfa_env(), cwd=REPO)
    return ServerProcess(process, grpc_port, http_port, metrics_port, log)
