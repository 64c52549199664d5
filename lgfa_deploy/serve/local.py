"""A local ``lgfa serve`` in a child process on free loopback ports, started and stopped in bounded time.

For the serving tests and the load test (``benchmarks/serve_load.py``); only 127.0.0.1, ever.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lgfa_deploy.errors import LgfaError

REPO = Path(__file__).resolve().parents[2]
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
    """The environment of a child ``lgfa``: this checkout of lgfa_deploy first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@dataclass
class ServerProcess:
    """A running server and where it listens."""

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
        """Until every model answers ready over gRPC (the server turns ready before its models load);
        a server that exits or takes longer than START_SECONDS raises :class:`LgfaError` with its log's end."""
        from tritonclient import grpc

        deadline = time.monotonic() + START_SECONDS
        client = grpc.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise LgfaError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
                try:
                    if all(client.is_model_ready(model) for model in models):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.5)
        finally:
            client.close()
        self.stop()
        raise LgfaError(f"the server was not ready within {START_SECONDS:g} s:\n{self.log.read_text()[-3000:]}")

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


def start_tritonserver(repository: Path, workdir: Path) -> ServerProcess:
    """The ``tritonserver`` binary that PyTriton ships, serving ``repository`` on three free loopback
    ports with its Python backend (``workdir`` receives the backend folder and ``tritonserver.log``)."""
    import sysconfig

    import pytriton
    from pytriton.utils.distribution import get_libs_path

    dist = Path(pytriton.__file__).parent / "tritonserver"
    backend = workdir / "backends" / "python"
    backend.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (backend / name).symlink_to(dist / "backends" / "python" / name)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (backend / "triton_python_backend_stub").symlink_to(dist / "python_backend_stubs" / version / "triton_python_backend_stub")
    grpc_port, http_port, metrics_port = free_ports(3)
    command = [
        str(dist / "bin" / "tritonserver"), f"--model-repository={repository}",
        f"--backend-directory={workdir / 'backends'}",
        "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
        f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
        f"--backend-config=python,shm-region-prefix-name=lgfa{os.getpid()}x{grpc_port}x",
        "--exit-timeout-secs=30", "--log-verbose=0",
    ]
    env = lgfa_env()
    libraries = [sysconfig.get_config_var("LIBDIR") or "", str(get_libs_path()), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libraries if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # the stub finds this Python
    log = workdir / "tritonserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return ServerProcess(process, grpc_port, http_port, metrics_port, log)
