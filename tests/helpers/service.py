"""Shared by the service tests: tiny problems, and a real server on a free loopback port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]  # on PYTHONPATH so the server can import tests.helpers.slow_solver


def problem(n_layers: int = 6, budget: float = 3.0, seed: int = 0, bits=(2, 3, 4, 8)) -> dict:
    """A problem written by hand in the mpq.problem/v1 format: noisy distortions, varied layer sizes."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n_layers):
        params = int(rng.integers(64, 4096))
        options = []
        for b in bits:
            options.append({
                "id": f"int{b}", "w_bits": b, "bytes": -(-params * b // 8),
                "distortion": float(params * 2.0 ** (-2 * b) * rng.uniform(0.5, 1.5)),
            })
        layers.append({"name": f"block{i}.linear", "params": params, "options": options})
    return {"schema": "mpq.problem/v1", "layers": layers, "constraints": {"max_avg_bits": budget},
            "model": {"name": "tests:tiny", "fingerprint": f"sha256:tiny{seed}"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mpq serve`` as a subprocess on 127.0.0.1; ``kill()`` is kill -9."""

    def __init__(self, db: str, *args: str, port: int | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **(env or {})}
        if "MPQ_TOKEN" not in (env or {}):
            full_env.pop("MPQ_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from mpq.cli import main; sys.exit(main())", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", db,
             "--plugin", "tests.helpers.slow_solver", "--log-level", "warning", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stdout.read().decode()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
