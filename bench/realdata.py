"""Trained models on real spectra (scikit-spectra's AuNP session, bench/skspec.py): do no harm, and the gates.

    PYTHONPATH=$PWD .venv/bin/python bench/realdata.py [--fit-model CKPT --fit-corpus WS]
        [--default-model CKPT --default-corpus WS] [--plot docs/realdata.png] [--out bench-out/realdata]

CKPT: a checkpoint (`*_best.pt`) trained on the synthetic corpus in WS (a `godrun data synth` workspace; its
data/metadata/dose_features.csv conditions the model), e.g. bench/quality.py's
`runs/checkpoints/n2n-small/mamba_tiny_uv_best.pt` with `--noise-profile skspec-fit` / `default`. Without
either model, both are trained here first as bench/quality.py's n2n-small run does (scale 0.2, --seed 11,
15 x 40 steps; cached under --out).

The real session goes through `godrun data import`, as a user's instrument files would: the bench writes each
scan as a two-column text file (nm, transmittance = scan / mean blank: the blank referencing an instrument's
export has already done), a META.csv (file, group_id = the run, replicate = the scan's place in it, and the
FiLM columns of the corpus's zero-dose control group treatment_6/sample_I/6Oclock, so the model is conditioned
as a control sample), runs `godrun data import` (the 26 blanks are its training group, the AuNP runs its panel)
and judges the imported panel (`godrun.evaluator.panel.load_panel`: the import's grid, references and dose
features, every pin checked). The import crops 200-850 nm to the corpus grid (200-800 nm, 1 nm).

(a) do no harm on natural noise (--fit-model): noisy = each single AuNP scan (52), clean = the leave-one-out
    mean of the other scans of its run (the import's `--references replicate-mean`); natural replicate noise.
    The model must not lower PSNR below raw's (panel mean, and per spectrum), add no spurious dip in 320-500 nm
    and keep the downstream quantities (gate 4's band integrals) within 10 % (Σ|Q(p) − Q(r)| / Σ|Q(r)|, every spectrum).
(b) real shapes, project noise (--default-model): the three AuNP run means, 60 noisy copies each (180) through
    the default profile's noise (godrun/data/noise.py), imported with each run mean as `reference_file`; the four
    gates at their default thresholds for raw, the classical denoisers and the model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from skspec import ATTRIBUTION, Session, load_session

from godrun.data import layout
from godrun.data.noise import add_noise, load_profile
from godrun.evaluator.denoisers import DENOISERS
from godrun.evaluator.panel import Panel, checkpoint_candidates, load_panel
from godrun.gates.metrics import downstream_quantities, evaluate_gates, panel_metrics
from godrun.spec import Gates, Verdict

CONTROL_GROUP = "treatment_6/sample_I/6Oclock"
AUNP_RUNS = ("aunp1", "aunp2", "aunp3")
COPIES = 60
DOWNSTREAM_TOL = 0.10


def natural_scans(session: Session) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(spectra, references) per group: every AuNP scan as measured; no reference files (the import's
    --references replicate-mean makes each scan's leave-one-out run mean)."""
    return {name: session.transmittance(name) for name in AUNP_RUNS}, {}


def project_noise(session: Session, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(spectra, references) per group: COPIES readings of each AuNP run mean through the default profile."""
    rng = np.random.default_rng([seed, 21])
    profile = load_profile("default")
    means = {name: session.transmittance(name).mean(axis=0) for name in AUNP_RUNS}
    noisy = {name: add_noise(np.repeat(m[None], COPIES, axis=0), session.wl, rng, profile) for name, m in means.items()}
    return noisy, means


def _write_spectrum(path: Path, wl: np.ndarray, values: np.ndarray) -> None:
    lines = ["nm,T", *(f"{x:g},{y:.9g}" for x, y in zip(wl, values, strict=True))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def control_features(corpus: Path) -> dict[str, float]:
    """The FiLM features of the corpus's zero-dose control group (the model is conditioned as that sample)."""
    table = pd.read_csv(corpus / layout.DOSE_FEATURES, dtype={"group_id": str}).set_index("group_id")
    return {c: float(table.loc[CONTROL_GROUP, c]) for c in layout.DOSE_FEATURE_COLUMNS}


def import_session(
    session: Session,
    spectra: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    features: dict[str, float],
    work: Path,
) -> Panel:
    """Write the instrument files and META.csv, run `godrun data import`, load the imported panel.

    Groups: the blanks (training) and each key of `spectra` (panel). With `references` each panel row names its
    group's reference file; without, the import's leave-one-out replicate means are the references."""
    from godrun.cli import main as godrun

    if work.exists():
        shutil.rmtree(work)
    src, out = work / "instrument", work / "imported"
    rows = []
    groups = {"blank": session.transmittance("blank"), **spectra}
    for group, scans in groups.items():
        ref = references.get(group)
        if ref is not None:
            _write_spectrum(src / group / "mean.csv", session.wl, ref)
        for i, scan in enumerate(scans):
            rel = f"{group}/scan{i:03d}.csv"
            _write_spectrum(src / rel, session.wl, scan)
            row = {"file": rel, "group_id": group, "replicate": i, "reference_file": ""}
            if ref is not None:
                row["reference_file"] = f"{group}/mean.csv"
            rows.append(row | features)
    meta = work / "META.csv"
    pd.DataFrame(rows).to_csv(meta, index=False)
    args = ["data", "import", str(src), "--metadata", str(meta), "--out", str(out)]
    args += [a for g in spectra for a in ("--panel-group", g)]
    if not references:
        args += ["--references", "replicate-mean"]
    if godrun(args) != 0:
        raise SystemExit("godrun data import failed")
    return load_panel(
        out / layout.PANEL_MANIFEST,
        out / layout.SPECTRA_DIR,
        out / layout.WAVELENGTH_GRID,
        metadata_csv=out / layout.DOSE_FEATURES,
    )


def predict(model: Path, panel: Panel) -> np.ndarray:
    (cand,) = checkpoint_candidates([model])
    return np.asarray(cand.predict(panel), dtype=np.float64)


def downstream_rel(pred: np.ndarray, reference: np.ndarray, wl: np.ndarray) -> np.ndarray:
    q_p, q_r = downstream_quantities(pred, wl), downstream_quantities(reference, wl)
    return np.abs(q_p - q_r).sum(axis=1) / np.maximum(np.abs(q_r).sum(axis=1), 1e-12)


def no_harm(session: Session, model: Path, corpus: Path, work: Path) -> tuple[bool, list[str], dict[str, np.ndarray]]:
    panel = import_session(session, *natural_scans(session), control_features(corpus), work / "natural")
    wl, raw, reference = panel.wavelengths, panel.raw.astype(np.float64), panel.reference.astype(np.float64)
    pred = predict(model, panel)
    gates = Gates()
    per_raw = panel_metrics(raw, reference, raw, wl, gates)
    per_model = panel_metrics(pred, reference, raw, wl, gates)
    ds_raw, ds_model = downstream_rel(raw, reference, wl), downstream_rel(pred, reference, wl)
    psnr_r, psnr_m = per_raw["psnr"].to_numpy(float), per_model["psnr"].to_numpy(float)
    lines = [
        f"(a) natural noise, {len(raw)} AuNP scans vs leave-one-out run means (imported); model {model}",
        f"    PSNR dB        raw mean {psnr_r.mean():.2f} (min {psnr_r.min():.2f}) | model {psnr_m.mean():.2f} "
        f"(min {psnr_m.min():.2f}); model below raw on {int((psnr_m < psnr_r).sum())} of {len(psnr_r)} spectra",
        f"    SAM deg        raw {per_raw['sam'].mean():.4f} | model {per_model['sam'].mean():.4f}",
        f"    spurious dips  raw {int(per_raw['n_spurious'].sum())} | model {int(per_model['n_spurious'].sum())} "
        f"(reference dips found: {int(per_raw['n_ref_dips'].sum())})",
        f"    downstream rel raw median {np.median(ds_raw):.3f} max {ds_raw.max():.3f} | model median "
        f"{np.median(ds_model):.3f} max {ds_model.max():.3f} (limit {DOWNSTREAM_TOL})",
    ]
    ok_psnr = psnr_m.mean() >= psnr_r.mean()
    ok_spur = int(per_model["n_spurious"].sum()) == 0
    ok_ds = bool((ds_model <= DOWNSTREAM_TOL).all())
    lines.append(
        f"    verdict: PSNR not lowered {_word(ok_psnr)}; no spurious dip {_word(ok_spur)}; "
        f"downstream within 10 % {_word(ok_ds)}"
    )
    return ok_psnr and ok_spur and ok_ds, lines, {"wl": wl, "raw": raw, "reference": reference, "pred": pred}


def _word(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def project_gates(
    session: Session, model: Path, corpus: Path, work: Path
) -> tuple[bool, list[str], dict[str, np.ndarray]]:
    panel = import_session(session, *project_noise(session), control_features(corpus), work / "project")
    wl, raw, reference = panel.wavelengths, panel.raw.astype(np.float64), panel.reference.astype(np.float64)
    gates = Gates()
    sources = {name: np.asarray(f(raw, wl), dtype=np.float64) for name, f in DENOISERS.items()}
    sources["model"] = predict(model, panel)
    rows = []
    for name, pred in sources.items():
        per = panel_metrics(pred, reference, raw, wl, gates)
        v = evaluate_gates(per, gates)
        rows.append({"source": "raw" if name == "identity" else name, **_verdict_row(per, v)})
    table = pd.DataFrame(rows).to_string(index=False, float_format="%.4g")
    model_pass = rows[-1]["verdict"] == "pass"
    lines = [
        f"(b) real shapes + default-profile noise, {len(raw)} spectra (3 AuNP run means x {COPIES}, imported); "
        f"model {model}",
        *("    " + s for s in table.splitlines()),
    ]
    return model_pass, lines, {"wl": wl, "raw": raw, "reference": reference, "pred": sources["model"]}


def _verdict_row(per: pd.DataFrame, v: Verdict) -> dict:
    return {
        "psnr": v.psnr_mean,
        "sam": v.sam_mean,
        "tail": v.tail_ratio,
        "roi": v.roi_ratio,
        "ref_dips": int(per["n_ref_dips"].sum()),
        "spurious": v.spurious_peaks,
        "downstream": float(per["downstream_err"].mean()),
        "ds_raw": float(per["downstream_err_raw"].mean()),
        "verdict": v.verdict if v.verdict == "pass" else f"fail ({', '.join(v.failed_gates)})",
    }


def plot(parts: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(parts), figsize=(7 * len(parts), 7.6), squeeze=False)
    for col, (title, d) in enumerate(parts.items()):
        ax, res = axes[0, col], axes[1, col]
        i = 0
        ax.plot(d["wl"], d["raw"][i], color="0.6", lw=0.8, label="input")
        ax.plot(d["wl"], d["reference"][i], "k", lw=1.2, label="clean")
        ax.plot(d["wl"], d["pred"][i], "C0", lw=1.0, label="model")
        ax.set(xlabel="nm", ylabel="T", title=f"{title}: spectrum 0")
        ax.legend(fontsize=8)
        # the error over every spectrum: its mean (a bias) and its rms, input and model
        for name, key, color in (("input", "raw", "0.5"), ("model", "pred", "C0")):
            err = d[key] - d["reference"]
            res.plot(d["wl"], np.sqrt((err**2).mean(axis=0)), color=color, lw=1.0, label=f"{name} rms")
            res.plot(d["wl"], err.mean(axis=0), color=color, lw=1.0, ls="--", label=f"{name} mean")
        res.axhline(0, color="k", lw=0.5)
        res.set(xlabel="nm", ylabel="error vs clean (T)", title=f"{title}: error over all spectra")
        res.legend(fontsize=8)
        for a in (ax, res):
            a.axvspan(320, 500, color="C2", alpha=0.07)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    plt.close(fig)


def trained(out: Path, profile: str, seed: int) -> tuple[Path, Path]:
    """(checkpoint, corpus) of bench/quality.py's small N2N run on a scale-0.2 corpus under `profile` (reused)."""
    from quality import corpus, train_run

    root = out / f"corpus-s{seed}-{profile}"
    ckpt = out / f"runs-{profile}" / "checkpoints" / "n2n-small" / "mamba_tiny_uv_best.pt"
    if not ckpt.is_file():
        corpus(root, 0.2, seed, profile)
        train_run(root, out / f"runs-{profile}", "n2n-small", 15, 40, seed)
    return ckpt, root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit-model", type=Path, help="checkpoint trained under skspec-fit: part (a)")
    ap.add_argument("--fit-corpus", type=Path, help="its synth workspace (for dose_features.csv)")
    ap.add_argument("--default-model", type=Path, help="checkpoint trained under the default profile: part (b)")
    ap.add_argument("--default-corpus", type=Path, help="its synth workspace")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--strict", action="store_true", help="exit 1 when (a) or the model in (b) fails")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("bench-out/realdata"),
        help="imports; models trained when none given",
    )
    ap.add_argument("--seed", type=int, default=11, help="corpus seed of the models trained here")
    a = ap.parse_args(argv)
    if a.fit_model is None and a.default_model is None:  # train both here (bench/quality.py's small N2N run)
        a.fit_model, a.fit_corpus = trained(a.out, "skspec-fit", a.seed)
        a.default_model, a.default_corpus = trained(a.out, "default", a.seed)
    print(ATTRIBUTION)
    session = load_session()
    verdicts, parts = [], {}
    for model, corpus, run, title in (
        (a.fit_model, a.fit_corpus, no_harm, "(a) natural noise"),
        (a.default_model, a.default_corpus, project_gates, "(b) default-profile noise"),
    ):
        if model is None:
            continue
        if corpus is None:
            ap.error(f"{model}: give its corpus workspace too")
        ok, lines, data = run(session, model, corpus, a.out)
        print("\n" + "\n".join(lines))
        verdicts.append(ok)
        parts[title] = data
    if not parts:
        ap.error("give --fit-model and/or --default-model")
    if a.plot:
        plot(parts, a.plot)
        print(f"\nwrote {a.plot}")
    print(f"\nreal-data verdicts: {'all PASS' if all(verdicts) else 'FAIL (see above)'}")
    return 1 if a.strict and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
