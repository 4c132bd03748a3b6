"""``syncsvc simulate-api``: a local DashScope-compatible embeddings API to rehearse against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from syncsvc.core.lazy import lazy_module
from syncsvc.simulator.faults import FaultKind, parse_fault

if TYPE_CHECKING:
    from syncsvc.simulator import app as simulator_app
    from syncsvc.simulator import server as simulator_server
else:  # Starlette and uvicorn load only when the simulator runs
    simulator_app = lazy_module("syncsvc.simulator.app")
    simulator_server = lazy_module("syncsvc.simulator.server")

_FAULT_HELP = (
    "Inject a fault: KIND[:key=value,...] with KIND one of "
    + ", ".join(k.value for k in FaultKind)
    + " and keys count, rate, retry_after, retry_after_ms, hang_seconds, route. "
    "E.g. '429:rate=0.05,retry_after=1' or '500:count=3'. Repeatable."
)


def register(app: typer.Typer) -> None:
    app.command("simulate-api")(simulate_api_command)


def simulate_api_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Added latency per request.")
    ] = 0.0,
    jitter_ms: Annotated[
        float, typer.Option("--jitter-ms", help="Random +/- latency per request.")
    ] = 0.0,
    rpm: Annotated[
        int | None, typer.Option("--rpm", help="Requests per minute, enforced per second.")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", help="Tokens per minute, enforced per second.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="SYNCSVC_SIM_API_KEY",
            help="Require this bearer key (any key is accepted when unset).",
        ),
    ] = None,
    fault: Annotated[list[str] | None, typer.Option("--fault", help=_FAULT_HELP)] = None,
    poison: Annotated[
        list[str] | None,
        typer.Option("--poison", help="Inputs containing this text get 400 DataInspectionFailed."),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option("--max-batch", help="Inputs per request (default: each model's limit)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for probabilistic faults.")] = 0,
    vectors: Annotated[
        str,
        typer.Option(
            "--vectors",
            help="Reply vectors: 'dense' (full-precision floats, as the real API sends) or "
            "'lexical' (the offline lexical embedder's, mostly zeros, hand-computable).",
        ),
    ] = "dense",
) -> None:
    """Serve the DashScope compatible and native embedding routes and a plain /v1/embeddings.

    Vectors are dense and full precision, as the real API sends them, and deterministic per
    text (texts sharing words rank close together); --vectors lexical sends the offline lexical
    embedder's instead.
    Faults can also be changed while running: POST /_sim/faults, GET /_sim/stats.
    """
    try:
        rules = tuple(parse_fault(spec) for spec in fault or [])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--fault") from None
    if vectors not in ("dense", "lexical"):
        raise typer.BadParameter("'dense' or 'lexical'", param_hint="--vectors")
    config = simulator_app.SimulatorConfig(
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        rpm=rpm,
        tpm=tpm,
        api_key=api_key,
        faults=rules,
        poison=tuple(poison or ()),
        max_batch=max_batch,
        seed=seed,
        vectors=vectors,
    )
    url = f"http://{host}:{port}"
    typer.echo(f"API simulator on {url}", err=True)
    typer.echo(f"  DashScope compatible base_url: {url}/compatible-mode/v1", err=True)
    typer.echo(f"  DashScope native base_url:     {url}/api/v1", err=True)
    typer.echo(f"  OpenAI-compatible base_url:    {url}/v1", err=True)
    typer.echo(f"  stats: GET {url}/_sim/stats   faults: POST {url}/_sim/faults", err=True)
    from syncsvc.core.runtime import tune_gc

    tune_gc()  # a collector stall would shift requests across the per-second rate windows
    simulator_server.serve(config, host, port)
