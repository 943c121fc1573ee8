"""Plain-text and rich tables shared by the CLI commands (gate tables, `kubectl get gr`-style rows)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime

from godrun.spec import GodRunStatus, Verdict

GATE_HEADER = ("gate", "metric", "value", "threshold", "result")
RUN_HEADER = ("NAME", "PHASE", "VERDICT", "PSNR", "SAM", "EPOCH", "AGE")


def format_plain(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces (what `kubectl get` prints)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def print_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], *, failed_col: int | None = None
) -> None:
    """A rich table on a terminal, plain columns otherwise (logs, pipes, CI)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in header:
            table.add_column(col)
        for r in rows:
            bad = failed_col is not None and r[failed_col] != "pass"
            table.add_row(*r, style="bold red" if bad else None)
        Console().print(table)
    else:
        if title:
            print(title)
        print(format_plain(header, rows))


def gate_rows(verdict: Verdict) -> list[tuple[str, str, str, str, str]]:
    """One row per thresholded check of the four gates."""
    rows: list[tuple[str, str, str, str, str]] = []
    for g in verdict.gates:
        for c in g.checks:
            value = "n/a" if c.value is None else f"{c.value:.4g}"
            rows.append((g.name, c.metric, value, f"{c.op} {c.threshold:g}", "pass" if c.passed else "FAIL"))
    return rows


def print_gate_table(verdict: Verdict, title: str) -> None:
    print_table(title, GATE_HEADER, gate_rows(verdict), failed_col=4)


def _age(start: datetime | None, now: datetime) -> str:
    if start is None:
        return "<unknown>"
    secs = max(0, int((now - start).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m{secs % 60}s" if secs < 600 else f"{secs // 60}m"
    return f"{secs // 3600}h" if secs < 48 * 3600 else f"{secs // 86400}d"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def run_row(name: str, status: GodRunStatus, now: datetime) -> tuple[str, ...]:
    """The printer columns of `kubectl get gr` (Phase, Verdict, PSNR, SAM, Epoch, Age) for one run."""
    panel = status.panel
    return (
        name,
        status.phase,
        panel.verdict if panel else "",
        _num(panel.psnr_mean if panel else None),
        _num(panel.sam_mean if panel else None),
        str(status.progress.epoch),
        _age(status.start_time, now),
    )
