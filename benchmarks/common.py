"""What every section shares: the run's options, the set-up it measures, and output.

Sections (``per_request``, ``instructions``, ``scale``, ...) take ``(Options, Setup)`` and
print Markdown to stdout with :func:`out`; progress goes to stderr through :func:`log`.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import bench_guardian
import bench_pg
from bench_harness import QueryCount, Target

#: Every section, in the order a run prints them.
SECTION_NAMES = (
    "per-request", "sign-in", "memory", "scale", "purge", "profile", "instructions", "server",
    "cache",
)
#: Sections only run when asked for by name (--only, --profile): slow, diagnostic, or
#: starting servers of their own.
OPT_IN = {"profile", "instructions", "server", "cache"}


@dataclass
class Options:
    """The parsed command line (see ``run.py --help``)."""

    quick: bool
    rounds: int
    requests: int | None
    batch_seconds: float
    warmup: int
    postgres_url: str | None
    scale_rows: int
    scale_alternations: int
    pairs: int
    memory_requests: int
    purge_rows_pg: int
    purge_rows_sqlite: int
    signin_rounds: int
    signin_requests: int
    only: set[str]
    tracemalloc: bool
    keep_schema: bool
    redis_url: str | None


def short_traceback(limit: int = 4000) -> str:
    """The current exception's traceback, cut to ``limit`` characters at each end (an
    SQLAlchemy error can quote thousands of bound parameters)."""
    text_ = traceback.format_exc()
    if len(text_) <= 2 * limit:
        return text_
    return f"{text_[:limit]}\n[... {len(text_) - 2 * limit:,} characters cut ...]\n{text_[-limit:]}"


def log(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def out(text_: str = "") -> None:
    """A line of the Markdown report on stdout."""
    print(text_, flush=True)


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@dataclass
class Row:
    """A timed target plus what the table says about it."""

    target: Target
    engines: list[Any] = field(default_factory=list)
    readers: list[Any] = field(default_factory=list)
    queries_note: str = ""
    queries: QueryCount | None = None


@dataclass
class Setup:
    """Everything built once and measured by the sections."""

    rows: list[Row]
    guardian: dict[str, bench_guardian.GuardianApp]
    pg: bench_pg.Postgres | None
    pg_reason: str
    guardian_reason: str | None
    failures: list[str]
    # Further schemas made on the server (dropped at the end with the main one).
    extra_pg: list[bench_pg.Postgres] = field(default_factory=list)
    #: Run at the end, last first (deleting the run's Redis keys, closing connections).
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (both the value itself for a single value)."""
    if len(values) < 2:
        return (values[0], values[0])
    q1, _q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q1, q3)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; numeric-looking columns right-aligned."""
    materialised = [list(r) for r in rows]
    align = []
    for i, _ in enumerate(header):
        cells = [r[i] for r in materialised if i < len(r)]
        numeric = bool(cells) and all(_looks_numeric(c) for c in cells)
        align.append("---:" if numeric else ":---")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines.extend("| " + " | ".join(r) + " |" for r in materialised)
    return "\n".join(lines)


def _looks_numeric(cell: str) -> bool:
    stripped = cell.strip().rstrip("x%sµ").replace(",", "")
    stripped = stripped.replace(".", "").replace(" ", "").replace("-", "").lstrip("+")
    return stripped.isdigit() or cell.strip() in ("", "—", "n/a")


def fmt_us(value: float) -> str:
    """Microseconds, one decimal below 1,000."""
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    """A ratio as ``1.23x``."""
    return f"{value:.2f}x"
