"""Small line charts of the last hour, drawn on the server as inline SVG (no script, no CDN).

``charts(samples)`` turns the daemon's samples (``syncsvc.observe.history``) into the geometry
the template draws: per chart, a polyline per series in a fixed box, the time axis running
from the oldest sample, at most an hour back (left), to the newest (right): a daemon started a
minute ago fills the box with its minute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from syncsvc.observe import status
from syncsvc.observe.history import WINDOW_SECONDS, Sample

WIDTH = 360
HEIGHT = 100
COLOURS = ("#1f6fd1", "#d1451f")
"""First and second series (the browser test looks for these pixels)."""


@dataclass(frozen=True)
class Line:
    label: str
    colour: str
    points: str
    """SVG polyline points, ``x,y x,y …``."""
    count: int
    latest: str
    """The newest value, formatted as the CLI would."""

    @property
    def dot(self) -> tuple[str, str] | None:
        """Where to mark a line of one point (a polyline of one point draws nothing)."""
        if self.count != 1:
            return None
        x, _, y = self.points.partition(",")
        return x, y


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    lines: tuple[Line, ...]
    top: str
    """The value at the top of the box."""
    since: str
    """How far back the left edge is (``1h00m``)."""
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return all(line.count == 0 for line in self.lines)


Series = tuple[str, Callable[[Sample], float | None]]


def _nice(peak: float) -> float:
    """A round number at or above ``peak`` for the top of the box."""
    if peak <= 0:
        return 1.0
    step = 1.0
    while step * 10 < peak:
        step *= 10
    while step > peak * 10:
        step /= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= peak:
            return step * factor
    return step * 10


def chart(
    key: str,
    title: str,
    samples: Sequence[Sample],
    series: Sequence[Series],
    fmt: Callable[[float | None], str],
    window: float = WINDOW_SECONDS,
) -> Chart:
    """One chart of ``series`` (label, value of a sample) over the ``window`` before the
    newest sample; a missing value (None) is left out of its line."""
    values = [[(s.at, get(s)) for s in samples] for _, get in series]
    peak = max((v for line in values for _, v in line if v is not None), default=0.0)
    top = _nice(peak)
    end = samples[-1].at if samples else 0.0
    start = samples[0].at if samples else end - window
    span = min(window, end - start) if end > start else window
    lines = []
    for (label, _), colour, line in zip(series, COLOURS, values, strict=False):
        points = [
            (WIDTH * (1 - (end - at) / span), HEIGHT * (1 - v / top))
            for at, v in line
            if v is not None and end - at <= span
        ]
        latest = next((v for _, v in reversed(line) if v is not None), None)
        lines.append(
            Line(
                label,
                colour,
                " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
                len(points),
                fmt(latest),
            )
        )
    return Chart(key, title, tuple(lines), fmt(top), status.duration(span))


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


MAX_POINTS = 2 * WIDTH
"""More points than this draw nothing more (a short sampling interval thins out)."""


def charts(samples: Sequence[Sample], window: float = WINDOW_SECONDS) -> list[Chart]:
    """Rows/s, lag p50/p99, queue depth, API errors and 429s."""
    if len(samples) > MAX_POINTS:
        step = -(-len(samples) // MAX_POINTS)
        samples = [*samples[-1::-step]][::-1]  # every step-th, the newest kept
    return [
        chart(
            "rows",
            "rows embedded per second",
            samples,
            [("rows/s", lambda s: s.rows_per_second)],
            lambda v: status.rate(v) if v else "0/s",
            window,
        ),
        chart(
            "lag",
            "lag, commit to vector",
            samples,
            [("p50", lambda s: s.lag_p50), ("p99", lambda s: s.lag_p99)],
            status.seconds,
            window,
        ),
        chart(
            "queue",
            "queue depth (rows to embed)",
            samples,
            [("rows", lambda s: None if s.queue_depth is None else float(s.queue_depth))],
            _count,
            window,
        ),
        chart(
            "api",
            "API errors and 429s per sample",
            samples,
            [("errors", lambda s: float(s.api_errors)), ("429", lambda s: float(s.rate_limited))],
            _count,
            window,
        ),
    ]
