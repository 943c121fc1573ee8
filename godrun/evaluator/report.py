"""report.html: one self-contained page (plots embedded as base64 PNG) people would rather look at than read.

Verdict banner, gate table, PSNR/SAM histograms with the thresholds drawn, per-group bars, the worst spectra
(raw / denoised / reference with the ROI shaded and dips marked), the training run's learning curves (its
metrics.csv, when there is one) and the checkpoint ranking.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from godrun.evaluator.panel import Evaluation, Panel
from godrun.gates import metrics
from godrun.spec import Gates, Verdict

N_WORST = 6
RANKING_ROWS = 30

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{margin-bottom:4px} .banner{padding:12px 18px;border-radius:6px;font-size:1.3em;font-weight:600;margin:12px 0}
.pass{background:#d8f3dc;color:#1b4332} .fail{background:#ffd6d6;color:#7a1010}
table{border-collapse:collapse;margin:8px 0 20px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f2f2f2} td.l,th.l{text-align:left} tr.bad td{background:#fff0f0} tr.good td{background:#f0fff3}
img{max-width:100%;border:1px solid #eee;margin:6px 0} code{font-size:.9em}
"""


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _hist(ax: Any, values: np.ndarray, lines: list[tuple[float, str, str]], xlabel: str) -> None:
    finite = values[np.isfinite(values)]
    marks = [x for x, _, _ in lines if np.isfinite(x)]
    span = [*marks, *([float(finite.min()), float(finite.max())] if finite.size else [])]
    lo, hi = min(span), max(span)
    pad = 0.03 * (hi - lo) + 1e-6
    ax.hist(finite, bins=np.linspace(lo - pad, hi + pad, 41), color="#5b8def", alpha=0.85)
    for x, label, color in lines:
        ax.axvline(x, color=color, ls="--", lw=1.5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("spectra")
    ax.legend(fontsize=8)


def histograms(per: pd.DataFrame, gates: Gates) -> str:
    fig = Figure(figsize=(11, 3.6))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, wspace=0.2)
    a, b = fig.subplots(1, 2)
    psnr = metrics.capped_psnr(per["psnr"])
    sam = per["sam"].to_numpy(float)
    _hist(
        a,
        psnr,
        [
            (gates.tail_psnr_min, f"tail floor {gates.tail_psnr_min:g} dB", "#d62728"),
            (gates.psnr_mean_min, f"mean min {gates.psnr_mean_min:g} dB", "#ff7f0e"),
            (float(np.nanmean(psnr)), "panel mean", "#2ca02c"),
        ],
        "PSNR (dB)",
    )
    _hist(
        b,
        sam,
        [
            (gates.tail_sam_max, f"tail ceiling {gates.tail_sam_max:g}°", "#d62728"),
            (gates.sam_mean_max, f"mean max {gates.sam_mean_max:g}°", "#ff7f0e"),
            (float(np.nanmean(sam)), "panel mean", "#2ca02c"),
        ],
        "SAM (degrees)",
    )
    return _png(fig)


def group_bars(groups: pd.DataFrame, gates: Gates) -> str:
    fig = Figure(figsize=(11, 3.6))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.25, wspace=0.2)
    a, b = fig.subplots(1, 2)
    labels = [g.replace("treatment_", "t").replace("/sample_", "/") for g in groups["group_id"]]
    x = np.arange(len(labels))
    a.bar(x, groups["psnr_mean"], color="#5b8def")
    a.axhline(gates.psnr_mean_min, color="#ff7f0e", ls="--", label=f"gate 1: {gates.psnr_mean_min:g} dB")
    a.set_ylabel("mean PSNR (dB)")
    a.legend(fontsize=8)
    width = 0.38
    b.bar(x - width / 2, groups["tail_pass_ratio"], width, label="tail pass", color="#2ca02c")
    if "roi_pass_ratio" in groups:
        b.bar(x + width / 2, groups["roi_pass_ratio"], width, label="ROI pass", color="#9467bd")
    b.axhline(gates.tail_fraction_min, color="#2ca02c", ls=":", lw=1)
    b.axhline(gates.roi_pass_fraction_min, color="#9467bd", ls=":", lw=1)
    b.set_ylim(0, 1.05)
    b.set_ylabel("fraction of spectra")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
    return _png(fig)


def worst_indices(per: pd.DataFrame, n: int = N_WORST) -> list[int]:
    """Lowest PSNR first, then spectra failing ROI or carrying spurious dips, without repeats."""
    order = list(np.argsort(per["psnr"].to_numpy(float), kind="stable")[: max(1, n // 2)])
    bad = np.zeros(len(per), dtype=bool)
    if "roi_pass" in per:
        bad |= ~per["roi_pass"].astype(bool).to_numpy()
    if "n_spurious" in per:
        bad |= per["n_spurious"].to_numpy() > 0
    for i in np.flatnonzero(bad):
        if len(order) >= n:
            break
        if i not in order:
            order.append(int(i))
    for i in np.argsort(per["psnr"].to_numpy(float), kind="stable"):
        if len(order) >= n:
            break
        if i not in order:
            order.append(int(i))
    return [int(i) for i in order]


def worst_spectra(panel: Panel, pred: np.ndarray, per: pd.DataFrame, gates: Gates) -> str:
    idx = worst_indices(per)
    cfg = gates.detector
    wl = panel.wavelengths
    rows = (len(idx) + 1) // 2
    fig = Figure(figsize=(11, 2.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, 2)).ravel()
    for ax, i in zip(axes, idx, strict=False):
        ax.plot(wl, panel.raw[i], color="#bbbbbb", lw=0.8, label="raw")
        ax.plot(wl, panel.reference[i], color="black", lw=1.2, ls="--", label="reference")
        ax.plot(wl, pred[i], color="#1f77b4", lw=1.2, label="denoised")
        ax.axvspan(gates.roi_min_nm, gates.roi_max_nm, color="#ffdd88", alpha=0.25, label="ROI")
        ref_c = [d.center_nm for d in metrics.detect_dips(panel.reference[i], wl, cfg)]
        for c in ref_c:
            ax.axvline(c, color="black", lw=0.7, ls=":")
        for d in metrics.detect_dips(pred[i], wl, cfg):
            spurious = not any(d.left_nm <= c <= d.right_nm for c in ref_c)
            ax.plot(
                [d.center_nm],
                [np.interp(d.center_nm, wl, pred[i])],
                marker="x" if spurious else "v",
                ms=8,
                color="#d62728" if spurious else "#1f77b4",
            )
        row = per.iloc[i]
        sid = panel.meta["spectrum_id"].iloc[i] if "spectrum_id" in panel.meta else i
        ax.set_title(f"{sid}: PSNR {row['psnr']:.1f} dB, SAM {row['sam']:.1f}°", fontsize=9)
        ax.set_xlabel("wavelength (nm)", fontsize=8)
    for ax in axes[len(idx) :]:
        ax.axis("off")
    axes[0].legend(fontsize=7, loc="best")
    fig.subplots_adjust(left=0.06, right=0.98, top=0.95, bottom=0.08, hspace=0.45, wspace=0.15)
    return _png(fig)


CURVES = (
    ("panel_psnr_mean", "PSNR (dB)", "psnr_mean_min"),
    ("panel_sam_mean", "SAM (°)", "sam_mean_max"),
    ("panel_roi_ratio", "ROI pass ratio", "roi_pass_fraction_min"),
    ("panel_spurious", "spurious dips", "spurious_peaks_max"),
    ("panel_downstream_err", "downstream error", None),
)


def learning_curves(history: pd.DataFrame, gates: Gates) -> str:
    """Per-epoch panel metrics from the trainer's metrics.csv, each with its gate threshold dashed."""
    shown = [c for c in CURVES if c[0] in history.columns]
    fig = Figure(figsize=(3.2 * len(shown), 3.0))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.17, wspace=0.35)
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    epoch = history["epoch"].to_numpy(float)
    for ax, (col, label, threshold) in zip(axes, shown, strict=True):
        ax.plot(epoch, history[col].to_numpy(float), marker=".", color="#5b8def")
        bound = getattr(gates, threshold) if threshold else None
        if threshold is None and "panel_downstream_err_raw" in history.columns:
            bound = float(history["panel_downstream_err_raw"].iloc[-1]) * (1.0 + gates.downstream_margin)
        if bound is not None:
            ax.axhline(bound, color="#d62728", ls="--", lw=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
    return _png(fig)


def gate_table_html(verdict: Verdict) -> str:
    rows = ['<tr><th class="l">gate</th><th class="l">metric</th><th>value</th><th>threshold</th><th>passed</th></tr>']
    for g in verdict.gates:
        for c in g.checks:
            value = "n/a" if c.value is None else f"{c.value:.4g}"
            cls = "good" if c.passed else "bad"
            rows.append(
                f'<tr class="{cls}"><td class="l">{html.escape(g.name)}</td><td class="l">{html.escape(c.metric)}</td>'
                f"<td>{value}</td><td>{html.escape(c.op)} {c.threshold:g}</td>"
                f"<td>{'yes' if c.passed else 'NO'}</td></tr>"
            )
    return "<table>" + "".join(rows) + "</table>"


def ranking_html(ranking: Sequence[dict[str, Any]]) -> str:
    cols = [
        "rank",
        "checkpoint",
        "verdict",
        "gates_passed",
        "composite_score",
        "psnr_mean",
        "sam_mean",
        "tail_ratio",
        "roi_ratio",
        "spurious_peaks",
        "seconds",
    ]
    head = "".join(f'<th class="{"l" if c == "checkpoint" else ""}">{c}</th>' for c in cols)
    body = []
    for r in ranking[:RANKING_ROWS]:
        cells = []
        for c in cols:
            v = r.get(c)
            text = f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))
            cells.append(f'<td class="{"l" if c == "checkpoint" else ""}">{text}</td>')
        body.append(f'<tr class="{"good" if r.get("verdict") == "pass" else ""}">{"".join(cells)}</tr>')
    more = f"<p>… and {len(ranking) - RANKING_ROWS} more in gates.json.</p>" if len(ranking) > RANKING_ROWS else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


# Spectrum ids and group names are user text: drawn as written, never parsed as mathtext or TeX.
@matplotlib.rc_context({"text.parse_math": False, "text.usetex": False})
def render(
    panel: Panel,
    best: Evaluation,
    verdict: Verdict,
    gates: Gates,
    groups: pd.DataFrame,
    ranking: Sequence[dict[str, Any]],
    hashes: dict[str, Any],
    title: str = "GodRun panel QA",
    history: pd.DataFrame | None = None,
) -> str:
    assert best.prediction is not None, "the top-ranked evaluation keeps its prediction"
    ok = verdict.verdict == "pass"
    failed = ", ".join(verdict.failed_gates) or "none"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Panel <code>{html.escape(str(panel.manifest))}</code> ({len(panel.meta)} spectra, sha256 "
        f"<code>{panel.manifest_sha256[:16]}…</code>); candidate <code>{html.escape(best.name)}</code>.</p>",
        f'<div class="banner {"pass" if ok else "fail"}">Verdict: {verdict.verdict.upper()}'
        f" — failed gates: {html.escape(failed)}</div>",
        "<h2>Readiness gates</h2>",
        gate_table_html(verdict),
        "<h2>PSNR and SAM over the panel</h2>",
        histograms(best.per_spectrum, gates),
        "<h2>Per group</h2>",
        group_bars(groups, gates),
        groups.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0),
        "<h2>Worst spectra</h2><p>Grey raw, dashed reference, blue denoised; ROI shaded; dotted lines: reference "
        "dips; ▼ predicted dips matching one, <span style='color:#d62728'>×</span> spurious dips.</p>",
        worst_spectra(panel, best.prediction, best.per_spectrum, gates),
        *(
            [
                "<h2>Learning curves</h2><p>The trainer's per-epoch panel metrics (metrics.csv); dashed: the gate.</p>",
                learning_curves(history, gates),
            ]
            if history is not None and len(history)
            else []
        ),
        "<h2>Checkpoint ranking</h2><p>More gates passed first, then the composite panel score.</p>",
        ranking_html(ranking),
        "<h2>Hashes</h2><pre>",
        html.escape("\n".join(f"{k}: {v}" for k, v in _flat(hashes))),
        "</pre></body></html>",
    ]
    return "\n".join(parts)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out
