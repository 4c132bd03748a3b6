"""Pytest fixtures for the API simulator; the shared conftest imports them.

``simulator`` is one server per session, reset (counters, faults, limits) before each test.
``make_provider`` builds providers through the real registry, pointed at the simulator.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from syncsvc.core.settings import ProviderSettings, Settings
from syncsvc.embed.profiles import Protocol, get_profile
from syncsvc.embed.provider import EmbeddingProvider
from syncsvc.providers.registry import build_provider
from syncsvc.simulator import SimulatorThread, run_in_thread

SIM_KEY = "sk-sim-test-0123456789"
SIM_KEY_ENV = "SYNCSVC_SIM_API_KEY"

ProviderMaker = Callable[..., EmbeddingProvider]


@pytest.fixture(scope="session")
def simulator_session() -> Iterator[SimulatorThread]:
    os.environ[SIM_KEY_ENV] = SIM_KEY
    sim = run_in_thread(api_key=SIM_KEY)
    yield sim
    sim.stop()


@pytest.fixture
def simulator(simulator_session: SimulatorThread) -> SimulatorThread:
    """The session's simulator with default behaviour and zeroed counters."""
    sim = simulator_session
    # A request held by an earlier test's hang fault must not finish into this test's counters.
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    sim.clear_faults()
    sim.configure(
        latency_ms=0,
        jitter_ms=0,
        rpm=None,
        tpm=None,
        api_key=SIM_KEY,
        max_batch=None,
        vocabulary="qwen",
        vectors="dense",
    )
    sim.reset()
    return sim


def simulator_base_url(sim: SimulatorThread, profile: str) -> str:
    """The ``base_url`` a profile needs to reach the simulator."""
    found = get_profile(profile)
    if found.protocol is Protocol.DASHSCOPE_NATIVE:
        return sim.native_base
    if profile.startswith("dashscope"):
        return sim.compatible_base
    return sim.openai_base


def simulator_settings(
    sim: SimulatorThread, profile: str = "dashscope-intl", name: str = "sim", **fields: Any
) -> Settings:
    """Settings with one provider ``name`` on ``profile`` pointed at the simulator."""
    config: dict[str, Any] = {
        "profile": profile,
        "base_url": simulator_base_url(sim, profile),
        "api_key_env": SIM_KEY_ENV,
        "timeout_seconds": 5.0,
    }
    config.update(fields)
    return Settings(providers={name: ProviderSettings(**config)})


@pytest.fixture
async def make_provider(simulator: SimulatorThread) -> AsyncIterator[ProviderMaker]:
    """``make_provider(profile='dashscope-intl', **ProviderSettings fields)``; closed after."""
    made: list[EmbeddingProvider] = []

    def make(profile: str = "dashscope-intl", **fields: Any) -> EmbeddingProvider:
        provider = build_provider("sim", simulator_settings(simulator, profile, **fields))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
