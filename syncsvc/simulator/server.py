"""Running the simulator: blocking (CLI), in a background thread (tests), and its admin client."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import httpx
import uvicorn

from syncsvc.simulator.app import SimulatorConfig, create_app
from syncsvc.simulator.faults import FaultRule

logger = logging.getLogger(__name__)

START_TIMEOUT = 10.0


def _uvicorn_config(config: SimulatorConfig, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A hanging fault must not hold a stop for its full duration.
        timeout_graceful_shutdown=1,
        backlog=2048,
    )


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.Server(_uvicorn_config(config, host, port)).run()


class SimulatorClient:
    """The admin surface of a running simulator (in this process or another)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # One client for all admin calls: building one per call costs an SSL context each time.
        self._admin = httpx.Client(timeout=10.0, trust_env=False)

    @property
    def compatible_base(self) -> str:
        """``base_url`` for the DashScope compatible-mode profiles."""
        return f"{self.url}/compatible-mode/v1"

    @property
    def native_base(self) -> str:
        """``base_url`` for the DashScope native profiles."""
        return f"{self.url}/api/v1"

    @property
    def openai_base(self) -> str:
        """``base_url`` for plain OpenAI-compatible profiles (gateways, Qwen3 hosts)."""
        return f"{self.url}/v1"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._admin.request(method, f"{self.url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def set_faults(self, *rules: FaultRule, poison: tuple[str, ...] | list[str] = ()) -> None:
        """Replace the active faults and poison substrings."""
        body = {"faults": [r.to_json() for r in rules], "poison": list(poison)}
        self._call("POST", "/_sim/faults", body)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_sim/faults")

    def configure(self, **changes: Any) -> None:
        """Change latency_ms, jitter_ms, rpm, tpm, api_key, max_batch, vocabulary or vectors
        ("dense" or "lexical") while running."""
        self._call("POST", "/_sim/config", changes)

    def reset(self) -> None:
        """Zero the counters and the rate windows."""
        self._call("POST", "/_sim/reset")


class SimulatorThread(SimulatorClient):
    """A simulator serving on a free loopback port from a daemon thread."""

    def __init__(self, config: SimulatorConfig, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        port = self._socket.getsockname()[1]
        super().__init__(f"http://{host}:{port}")
        self.port = port
        self._server = uvicorn.Server(_uvicorn_config(config, host, port))
        self._thread = threading.Thread(target=self._run, name="syncsvc-simulator", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> SimulatorThread:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(START_TIMEOUT / 0.01)):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                break
            deadline.wait(0.01)
        raise RuntimeError("the API simulator did not start")

    def stop(self) -> None:
        self._admin.close()
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT)
        self._socket.close()

    def __enter__(self) -> SimulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(config: SimulatorConfig | None = None, **options: Any) -> SimulatorThread:
    """Start a simulator on a free port; ``options`` are ``SimulatorConfig`` fields."""
    if config is None:
        config = SimulatorConfig(**options)
    return SimulatorThread(config).start()
