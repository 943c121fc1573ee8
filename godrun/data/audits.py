"""The three audit markdowns the seed names (coverage, replicate counts, panel hold-outs)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from godrun.data import layout


def _table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _role(group: str) -> str:
    return layout.PANEL_GROUPS[group][1] if group in layout.PANEL_GROUPS else "held out"


def train_summary(train: pd.DataFrame, panel_groups: Sequence[str] = tuple(layout.PANEL_GROUPS)) -> str:
    """Per-treatment sample/angle coverage of the training manifest."""
    rows = []
    present = set(train["angle"].astype(str))
    angles = [a for a in layout.ANGLES if a in present] + sorted(present - set(layout.ANGLES))
    for (t, s), g in train.groupby(["treatment", "sample"], sort=True):
        counts = g.groupby("angle").size()
        rows.append({"treatment": t, "sample": s, **{a: int(counts.get(a, 0)) for a in angles}, "spectra": len(g)})
    cov = pd.DataFrame(rows)
    per_t = train.groupby("treatment")["sample"].nunique()
    held = [g for g in panel_groups if g not in set(train["group_id"])]
    return (
        "# Training manifest summary\n\n"
        f"`{layout.MANIFEST_TRAIN}`: {len(train)} spectra in {train['group_id'].nunique()} groups.\n\n"
        "## Samples per treatment\n\n"
        + _table(pd.DataFrame({"treatment": per_t.index, "samples": per_t.to_numpy()}))
        + "\n\n## Sample/angle coverage (spectra)\n\n"
        + _table(cov)
        + "\n\nA 0 marks an angle whose whole group is held out for the validation panel: "
        + ", ".join(f"`{g}`" for g in held)
        + ".\n"
    )


def group_counts(train: pd.DataFrame) -> str:
    """Replicate counts by group_id (spectra, Noise2Noise pairs, per polarity)."""
    g = train.groupby("group_id", sort=True)
    df = pd.DataFrame(
        {
            "group_id": list(g.groups),
            "spectra": g.size().to_numpy(),
            "pairs": g["pair_id"].nunique().to_numpy(),
            **{pol: g["polarity"].apply(lambda s, p=pol: int((s == p).sum())).to_numpy() for pol in layout.POLARITIES},
        }
    )
    return (
        "# Training group counts\n\n"
        f"{len(df)} groups, {int(df['spectra'].sum())} spectra, {int(df['pairs'].sum())} replicate pairs.\n\n"
        + _table(df)
        + "\n"
    )


def panel_summary(
    panel: pd.DataFrame,
    train: pd.DataFrame,
    panel_sha256: str,
    panel_groups: Sequence[str] = tuple(layout.PANEL_GROUPS),
) -> str:
    """The validation hold-outs, their roles and the leakage check result."""
    rows = []
    for gid in panel_groups:
        role = _role(gid)
        g = panel[panel["group_id"] == gid]
        rows.append(
            {
                "group_id": gid,
                "role": role,
                "spectra": len(g),
                "pairs": g["pair_id"].nunique(),
                **{pol: int((g["polarity"] == pol).sum()) for pol in layout.POLARITIES},
            }
        )
    share = 100.0 * len(panel) / max(len(panel) + len(train), 1)
    return (
        "# Validation panel summary\n\n"
        f"`{layout.PANEL_MANIFEST}`: {len(panel)} spectra ({share:.1f} % of the corpus), whole groups held out "
        "(all replicates, both polarities); no augmentation.\n\n"
        + _table(pd.DataFrame(rows))
        + f"\n\nsha256 of the panel manifest: `{panel_sha256}`\n\n"
        "Leakage check: no group_id, spectrum_id or spectrum content hash is shared with the training manifest.\n"
    )
