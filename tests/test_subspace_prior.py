"""The subspace prior (godrun/model/subspace.py): what it removes, what it keeps, and how it travels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

from godrun.model import checkpoint as ckpt_io
from godrun.model.inference import build_model
from godrun.model.subspace import (
    GivebackSums,
    SubspacePrior,
    _Columns,
    _combine,
    despiked_input,
    noise_sd,
    window_starts,
    with_prior,
)
from godrun.spec import Recipe

L = 601
GRID = np.arange(L, dtype=np.float64)


def _clean(rng: np.random.Generator, n: int) -> np.ndarray:
    """Spectra in a 3-dimensional family: a sloped continuum and two bands, random amounts of each."""
    a, b, c = rng.uniform(0.5, 1.5, (3, n, 1))
    band1 = np.exp(-0.5 * ((GRID - 150) / 12) ** 2)
    band2 = np.exp(-0.5 * ((GRID - 380) / 8) ** 2)
    return 0.4 + a * (1 - GRID / L) * 0.5 - b * 0.2 * band1 - c * 0.1 * band2


def _low_frequency(rng: np.random.Generator, n: int, sd: float) -> np.ndarray:
    """Smooth noise (correlation ~8 points): the kind a pixel-scale denoiser keeps."""
    z = gaussian_filter1d(rng.normal(size=(n, L)), 8.0, axis=1)
    return sd * z / z.std()


def _fitted(rng: np.random.Generator, rank: int = 4, n: int = 400, white: float = 0.02) -> SubspacePrior:
    clean = _clean(rng, n)
    raw = np.repeat(clean, 2, axis=0) + rng.normal(0, white, (2 * n, L))
    partner = np.arange(2 * n) ^ 1  # rows 2k and 2k+1 are replicates of one spectrum
    prior = SubspacePrior(L, rank, 151)
    assert prior.fit(raw, partner)
    return prior


def _apply(prior: SubspacePrior, pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return prior(torch.from_numpy(pred), torch.from_numpy(measured)).numpy()


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2)))


def test_windows_cover_the_grid_and_end_on_its_last_point() -> None:
    starts = window_starts(601, 151)
    assert starts[0] == 0 and starts[-1] == 450 and all(b - a == 25 for a, b in itertools.pairwise(starts))
    assert window_starts(100, 60)[-1] == 40  # 0, 10, ..., 40: the last window ends on the last point


def test_the_batched_solve_is_weighted_least_squares_per_row_and_window() -> None:
    rng = np.random.default_rng(5)
    rows, n_win, n, p = 3, 4, 30, 5
    a = rng.normal(size=(n_win, n, p))
    b = rng.normal(size=(rows, n_win, n))
    keep = (rng.random((rows, n_win, n)) > 0.2).astype(np.float64)
    coef = _Columns(torch.from_numpy(a)).solve(torch.from_numpy(keep), torch.from_numpy(b)).numpy()
    fitted = _combine(torch.from_numpy(a), torch.from_numpy(coef)).numpy()
    for i, w in itertools.product(range(rows), range(n_win)):
        k = keep[i, w] > 0
        expected = np.linalg.lstsq(a[w][k], b[i, w][k], rcond=None)[0]
        np.testing.assert_allclose(coef[i, w], expected, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(fitted[i, w], a[w] @ expected, rtol=1e-6, atol=1e-9)


def test_noise_sd_from_pairs_matches_the_noise_added() -> None:
    rng = np.random.default_rng(0)
    clean = np.repeat(_clean(rng, 500), 2, axis=0)
    sd = np.linspace(0.01, 0.05, L)
    raw = clean + rng.normal(0, 1, clean.shape) * sd
    est = noise_sd(raw, np.arange(len(raw)) ^ 1)
    assert np.allclose(est, sd, rtol=0.15)
    unpaired = noise_sd(raw, np.arange(len(raw)))  # first differences: the same order of magnitude
    assert np.all((unpaired > 0.5 * sd) & (unpaired < 2.0 * sd))


def test_low_frequency_noise_outside_the_training_subspace_is_removed() -> None:
    rng = np.random.default_rng(1)
    prior = _fitted(rng)
    clean = _clean(rng, 50)
    pred = clean + _low_frequency(rng, 50, 0.01)  # what a network that kept the smooth noise returns
    measured = clean + rng.normal(0, 0.02, clean.shape)
    out = _apply(prior, pred, measured)
    assert _rms(out - clean) < 0.35 * _rms(pred - clean)


def test_a_level_or_tilt_the_prediction_got_wrong_comes_back_from_the_measurement() -> None:
    rng = np.random.default_rng(2)
    prior = _fitted(rng)
    clean = _clean(rng, 50)
    pred = clean + 0.02 * (GRID / L - 0.3)  # a network's bias on a rare group: a tilt, not noise
    measured = clean + rng.normal(0, 0.005, clean.shape)
    out = _apply(prior, pred, measured)
    assert _rms(out - clean) < 0.3 * _rms(pred - clean)  # what is left is the refit's share of the noise


def test_a_spectrum_in_the_subspace_passes_unchanged() -> None:
    rng = np.random.default_rng(3)
    prior = _fitted(rng)
    clean = _clean(rng, 20)
    out = _apply(prior, clean, clean)
    # the components, estimated from spectra with noise sd 0.02, carry a little of it; nothing more
    assert _rms(out - clean) < 1e-3 and np.abs(out - clean).max() < 5e-3


def test_a_spike_in_the_measurement_does_not_become_a_broad_dip() -> None:
    rng = np.random.default_rng(4)
    prior = _fitted(rng)
    clean = _clean(rng, 1)
    measured, pred = clean.copy(), clean.copy()
    measured[0, 300] += 0.4  # a cosmic-ray spike
    pred[0, 299:302] += (-0.02, 0.05, -0.02)  # the wiggle a network left of it
    out = _apply(prior, pred, measured)
    away = np.abs(GRID - 300) > 3
    assert np.abs(out - clean)[0, away].max() < 3e-3  # without the robust step: a bump ~150 points wide
    assert np.abs(out - clean)[0].max() < 0.02  # and the spike itself is not put back


def test_the_prior_commutes_with_the_per_spectrum_normalisation() -> None:
    rng = np.random.default_rng(5)
    prior = _fitted(rng)
    clean = _clean(rng, 10)
    pred, measured = clean + _low_frequency(rng, 10, 0.01), clean + rng.normal(0, 0.02, clean.shape)
    scale, offset = rng.uniform(0.5, 3.0, (10, 1)), rng.uniform(-1, 1, (10, 1))
    direct = _apply(prior, pred, measured)
    normalised = _apply(prior, (pred - offset) / scale, (measured - offset) / scale) * scale + offset
    assert np.abs(direct - normalised).max() < 1e-5  # float32 basis; the ridge shifts an offset by ~1e-9 x


def test_unfitted_or_absent_prior_is_the_identity() -> None:
    rng = np.random.default_rng(6)
    pred, measured = torch.from_numpy(_clean(rng, 3)), torch.from_numpy(_clean(rng, 3))
    prior = SubspacePrior(L, 4, 151)
    assert torch.equal(prior(pred, measured), pred)
    assert not prior.fit(np.zeros((10, L)), np.arange(10))  # too few spectra for rank 4: stays unfitted
    assert torch.equal(prior(pred, measured), pred)
    assert torch.equal(with_prior(torch.nn.Linear(1, 1), pred, measured), pred)


def test_recipe_refuses_a_window_the_rank_or_grid_cannot_hold() -> None:
    with pytest.raises(ValueError, match="subspace_rank must be 0 or < subspace_window"):
        Recipe(subspace_rank=8, subspace_window=8)
    with pytest.raises(ValueError, match="subspace_window <= sequence_length"):
        Recipe(subspace_window=700)
    assert build_model(Recipe(subspace_rank=0)).subspace is None


def _small(**kw: object) -> Recipe:
    return Recipe(d_model=8, n_layers=1, d_state=4, geometry_film=False, **kw)  # type: ignore[arg-type]


def test_the_fitted_prior_travels_in_the_checkpoint_and_an_old_checkpoint_still_loads(tmp_path) -> None:
    from godrun.contract.checkpoint import Checkpoint, CheckpointMeta
    from godrun.model import normalise
    from godrun.model.inference import load_model

    rng = np.random.default_rng(7)
    recipe = _small(subspace_rank=4)
    model = build_model(recipe)
    assert model.subspace is not None
    model.subspace.load_state_dict(_fitted(rng).state_dict())
    meta = CheckpointMeta(config=recipe.model_dump(), epoch=1, norm=normalise.norm_meta())
    ckpt_io.save_checkpoint(tmp_path / "new.pt", Checkpoint(model=model.state_dict(), meta=meta))
    loaded = load_model(tmp_path / "new.pt").model
    assert bool(loaded.subspace.fitted) and torch.equal(loaded.subspace.basis, model.subspace.basis)
    assert torch.equal(loaded.subspace.guard, model.subspace.guard) and (loaded.subspace.guard > 0).all()
    assert torch.equal(loaded.subspace.giveback, model.subspace.giveback)

    gone = ("subspace.guard", "subspace.noise", "subspace.giveback")
    unguarded = {k: v for k, v in model.state_dict().items() if k not in gone}
    ckpt_io.save_checkpoint(tmp_path / "unguarded.pt", Checkpoint(model=unguarded, meta=meta))
    before = load_model(tmp_path / "unguarded.pt").model.subspace  # written before the guard: fitted, no guard
    assert bool(before.fitted) and not before.guard.any() and not before.giveback.any()

    old = {k: v for k, v in model.state_dict().items() if not k.startswith(ckpt_io.SUBSPACE_PREFIX)}
    ckpt_io.save_checkpoint(tmp_path / "old.pt", Checkpoint(model=old, meta=meta))
    assert not bool(load_model(tmp_path / "old.pt").model.subspace.fitted)  # predicts without the prior


def test_a_warm_start_ignores_the_init_checkpoints_prior_whatever_its_shape() -> None:
    rng = np.random.default_rng(8)
    init = build_model(_small(subspace_rank=4))
    assert init.subspace is not None
    init.subspace.load_state_dict(_fitted(rng).state_dict())
    model = build_model(_small(subspace_rank=8))  # another rank: other buffer shapes
    added = ckpt_io.warm_start(model, init.state_dict(), "init.pt")
    assert added == [] and model.subspace is not None and not bool(model.subspace.fitted)
    assert torch.equal(model.head.weight, init.head.weight)


def _batch(x: torch.Tensor, cutout: torch.Tensor | None, shift: torch.Tensor | None):
    from godrun.trainer.dataset import Batch

    n = x.shape[0]
    return Batch(x, x, None, torch.zeros(n), torch.ones(n), None, cutout, shift)


def test_training_sees_the_prior_in_the_grids_frame_and_not_where_the_cutout_hid_the_input() -> None:
    from godrun.trainer.dataset import shift_spectra
    from godrun.trainer.loop import through_prior

    rng = np.random.default_rng(9)
    model = torch.nn.Module()
    model.subspace = _fitted(rng)
    clean = torch.from_numpy(_clean(rng, 4))
    pred = clean + torch.from_numpy(_low_frequency(rng, 4, 0.01))
    cut = torch.zeros(4, L, dtype=torch.bool)
    cut[:, 100:108] = True
    plain = with_prior(model, pred, clean)
    out = through_prior(model, pred, clean, _batch(clean, cut, torch.zeros(4)))
    assert torch.equal(out[cut], torch.zeros(32, dtype=out.dtype)) and torch.equal(out[~cut], plain[~cut])
    shift = torch.tensor([1.0, -1.0, 2.0, 0.0])  # whole points: moving back and forth is exact
    sp, sx = shift_spectra(pred, shift), shift_spectra(clean, shift)
    want = shift_spectra(plain, shift)
    moved = through_prior(model, sp, sx, _batch(clean, None, shift))
    in_place = with_prior(model, sp, sx)  # the prior applied where the jitter left the spectrum
    # only the points held at the edges differ (they move the end windows' fits a little)
    assert (moved - want).abs().max() < 0.1 * (in_place - want)[:3].abs().max()


def _off_family(rng: np.random.Generator, n: int) -> np.ndarray:
    """In-family spectra with a band the training family never had (a real sample after synthetic training)."""
    return _clean(rng, n) - 0.4 * np.exp(-0.5 * ((GRID - 520) / 10) ** 2)


def _guarded(prior: SubspacePrior, pred: np.ndarray, measured: np.ndarray, guard: bool = True) -> np.ndarray:
    """The prior in the normalised frame, as inference applies it, back in raw units (eval mode; the guard
    needs each row's normalisation scale)."""
    from godrun.model import normalise

    xn, params = normalise.normalise(measured)
    prior.eval()
    scale = torch.from_numpy(params["scale"]) if guard else None
    out = prior(torch.from_numpy(normalise.apply(pred, params)), torch.from_numpy(xn), scale)
    return normalise.denormalise(out.numpy(), params).astype(np.float64)


def test_the_guard_leaves_spectra_of_the_training_family_alone() -> None:
    rng = np.random.default_rng(10)
    prior = _fitted(rng)
    prior.giveback.zero_()  # the guard alone
    assert (prior.guard > 0).all()
    clean = _clean(rng, 200)
    measured = clean + rng.normal(0, 0.02, clean.shape)  # fresh draws of the training family and its noise
    guarded, plain = _guarded(prior, measured, measured), _guarded(prior, measured, measured, guard=False)
    assert np.abs(guarded - plain).max() < 1e-6


def test_the_guard_passes_a_window_the_model_does_not_know_through() -> None:
    rng = np.random.default_rng(11)
    prior = _fitted(rng)
    prior.giveback.zero_()  # the guard alone
    clean = _off_family(rng, 20)
    measured = clean + rng.normal(0, 0.02, clean.shape)  # the training family's noise
    plain = _guarded(prior, measured, measured, guard=False)
    guarded = _guarded(prior, measured, measured)
    band = np.abs(GRID - 520) < 25
    assert _rms((plain - clean)[:, band]) > 3 * 0.02  # the family's shapes cannot hold the band
    assert _rms((guarded - clean)[:, band]) < 1.2 * 0.02  # the measurement, passed through
    far = GRID < 520 - 200  # windows that do not reach the band keep the prior's output
    assert np.abs(guarded - plain)[:, far].max() < 1e-6


def _spiked(rng: np.random.Generator, x: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    """x with a one- and a two-point positive spike (half the level) per row within 40 nm of `near`."""
    y, hit = x.copy(), np.zeros(x.shape, dtype=bool)
    for i in range(len(y)):
        first = np.searchsorted(GRID, near) + rng.integers(-40, 30)
        for a, width in ((first, 1), (first + rng.integers(4, 10), 2)):  # apart: two spikes, not one of three
            hit[i, a : a + width] = True
    y[hit] += 0.5 * np.abs(x).mean()
    return y, hit


def test_a_window_that_gives_way_passes_the_despiked_input_through() -> None:
    from godrun.model import normalise

    rng = np.random.default_rng(14)
    prior = _fitted(rng)
    clean = _off_family(rng, 20)
    measured, hit = _spiked(rng, clean + rng.normal(0, 0.02, clean.shape), 520)
    xn, params = normalise.normalise(measured)
    model = torch.nn.Module()
    model.subspace = prior.eval()
    scale = torch.from_numpy(params["scale"])
    x = despiked_input(model, torch.from_numpy(xn), scale)  # as the predictors do: the network sees x too
    guarded = normalise.denormalise(with_prior(model, x, x, scale).numpy(), params).astype(np.float64)
    band = np.abs(GRID - 520) < 25
    assert np.abs(guarded - clean)[hit].max() < 6 * 0.02  # the spikes (>= 0.3 high) stayed out
    assert _rms((guarded - clean)[:, band]) < 1.2 * 0.02  # the band still came through
    spiky = normalise.denormalise(with_prior(model, torch.from_numpy(xn), torch.from_numpy(xn), scale).numpy(), params)
    assert np.abs(spiky - clean)[hit].max() > 0.2  # without the despike they came through


def test_the_despike_leaves_smooth_bands_and_plain_noise_alone() -> None:
    rng = np.random.default_rng(15)
    prior = _fitted(rng)
    x = 1.0 - 0.4 * np.exp(-0.5 * ((GRID - 300) / 4.25) ** 2)  # a 10 nm FWHM band, 40 % deep
    x += 0.5 * np.exp(-GRID / 10) - 0.3 * np.exp((GRID - 600) / 8)  # steep edges at both ends (a UV edge)
    smooth = torch.from_numpy(np.broadcast_to(x, (4, L)).copy())
    scale = torch.ones(4, dtype=torch.float64)
    assert torch.equal(prior.despike(smooth, scale), smooth)
    noisy = smooth + torch.from_numpy(rng.normal(0, 1, smooth.shape) * np.linspace(0.002, 0.05, L))
    changed = (prior.despike(noisy, scale) != noisy).double().mean()
    assert changed < 1e-3  # Gaussian noise alone (its level 25x higher at one end): six robust sds almost never
    spiky = noisy.clone()
    spiky[:, 40] += 0.3
    spiky[:, 100:102] += 0.3
    spiky[:, 590] += 1.0  # where the noise is 25x louder than at 40
    out = prior.despike(spiky, scale)
    at = [40, 100, 101, 590]
    assert (out[:, at] - smooth[:, at]).abs().max() < 0.15
    assert (out != noisy)[:, 200:580].double().mean() < 1e-3  # nothing else moved (almost)


def test_the_despike_fits_short_grids() -> None:
    rng = np.random.default_rng(17)
    for length in (6, 7, 30, 52):
        prior = SubspacePrior(length, rank=1, window=length)
        raw = 1.0 + rng.normal(0, 0.01, (40, length))
        prior.fit(raw, np.arange(40) ^ 1)
        x = torch.from_numpy(raw[:2].copy())
        x[:, length // 2] += 1.0
        out = prior.despike(x, torch.ones(2, dtype=torch.float64))
        assert out.shape == x.shape and float(out[:, length // 2].max()) < 1.2, length


def test_no_prior_no_despike() -> None:
    x = torch.zeros(2, L)
    x[:, 10] = 5.0
    assert torch.equal(despiked_input(torch.nn.Linear(1, 1), x, torch.ones(2)), x)
    model = torch.nn.Module()
    model.subspace = SubspacePrior(L, rank=3, window=151)  # not fitted
    assert torch.equal(despiked_input(model, x, torch.ones(2)), x)


def test_the_guard_needs_eval_mode_and_the_scale() -> None:
    rng = np.random.default_rng(12)
    prior = _fitted(rng)
    measured = torch.from_numpy(_off_family(rng, 4) + rng.normal(0, 0.02, (4, L)))
    scale = torch.ones(4)
    prior.train()
    training = prior(measured, measured, scale)  # the loss sees the prior itself, never the measurement
    prior.eval()
    assert torch.equal(training, prior(measured, measured))
    assert not torch.allclose(training, prior(measured, measured, scale))


def test_the_guards_misfit_is_the_noise_units_variance_of_the_residual() -> None:
    rng = np.random.default_rng(13)
    prior = _fitted(rng)
    n_win = len(prior.starts)
    fit = torch.zeros(3, n_win, 151, dtype=torch.float64)
    measured = torch.from_numpy(rng.normal(0, 1, (3, n_win, 151)))
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    got = prior.misfit(fit, measured, scale).numpy()
    sd = prior.noise.double().numpy()
    z2 = np.sort((measured.numpy() * scale.numpy()[:, None, None] / sd) ** 2, axis=-1)
    want = z2[..., : round(0.95 * 151)].mean(-1) / 0.759  # the 95 % smallest, over that mean for N(0, 1)
    assert np.allclose(got, want, rtol=1e-6)
    # residuals of the noise's own size score ~1 (the pair estimate of sd 0.02 is within a few %)
    noise = torch.from_numpy(rng.normal(0, 0.02, (200, n_win, 151)))
    assert abs(float(prior.misfit(torch.zeros_like(noise), noise, torch.ones(200)).median()) - 1) < 0.15


def _two_bands(rng: np.random.Generator, n: int) -> np.ndarray:
    """The family plus a narrow band 30 points from the first, its depth drawn on its own: windows that hold both
    need two components."""
    d = rng.uniform(0.0, 1.0, (n, 1))
    return _clean(rng, n) - d * 0.1 * np.exp(-0.5 * ((GRID - 180) / 4) ** 2)


def _pairs(clean: np.ndarray, rng: np.random.Generator, white: float) -> tuple[np.ndarray, np.ndarray]:
    raw = np.repeat(clean, 2, axis=0) + rng.normal(0, white, (2 * len(clean), L))
    return raw, np.arange(2 * len(clean)) ^ 1


def test_the_giveback_returns_what_the_components_cannot_hold() -> None:
    rng = np.random.default_rng(14)
    prior = SubspacePrior(L, 1, 151)  # one component: the windows with both bands cannot hold them
    assert prior.fit(*_pairs(_two_bands(rng, 400), rng, 0.002))
    prior.guard.zero_()  # the give-back alone
    clean = _two_bands(rng, 100)
    measured = clean + rng.normal(0, 0.002, clean.shape)
    given = _guarded(prior, measured, measured)
    kept = prior.giveback.clone()
    prior.giveback.zero_()
    plain = _guarded(prior, measured, measured)
    bands = (GRID > 120) & (GRID < 210)
    assert kept[bands].mean() > 0.3 and kept[GRID > 450].max() < 0.1
    assert _rms((given - clean)[:, bands]) < 0.7 * _rms((plain - clean)[:, bands])  # from the bias ...
    assert _rms((given - clean)[:, bands]) < 1.1 * 0.002  # ... to about the noise
    assert np.abs(given - plain)[:, GRID > 450].max() < 0.1 * 0.002
    prior.train()
    trained = prior(torch.from_numpy(measured), torch.from_numpy(measured), torch.ones(len(measured)))
    prior.giveback.copy_(kept)
    assert torch.equal(trained, prior(torch.from_numpy(measured), torch.from_numpy(measured), torch.ones(100)))


def test_the_giveback_stays_out_where_the_components_hold_the_family_or_the_noise_hides_the_bias() -> None:
    rng = np.random.default_rng(15)
    assert (_fitted(rng).giveback > 0).float().mean() < 0.1  # three shapes, four components: no bias to give
    loud = SubspacePrior(L, 1, 151)
    assert loud.fit(*_pairs(_two_bands(rng, 400), rng, 0.2))  # the bias is ~0.05, the noise 0.2
    assert (loud.giveback > 0).float().mean() < 0.1
    unpaired = SubspacePrior(L, 1, 151)
    assert unpaired.fit(_two_bands(rng, 400), np.arange(400))  # no replicate pairs: nothing to learn it from
    assert not unpaired.giveback.any()


def test_the_giveback_sums_learn_a_networks_bias_batch_by_batch() -> None:
    """The trainer learns the share each epoch from the network's outputs (GivebackSums): a smooth bias the
    output holds at 300-400 points is given back, ~nothing elsewhere, and the sums do not depend on batching."""
    rng = np.random.default_rng(16)
    clean = _clean(rng, 600)
    measured, partner = clean + rng.normal(0, 0.002, clean.shape), clean + rng.normal(0, 0.002, clean.shape)
    bias = 0.004 * np.exp(-0.5 * ((GRID - 350) / 30) ** 2)
    output = clean + bias + rng.normal(0, 0.0003, clean.shape)  # a denoiser that removed the noise, not its bias
    scale = rng.uniform(0.5, 2.0, len(clean))  # the rows' normalisation: the sums are in raw units
    args = [torch.from_numpy(v / scale[:, None]) for v in (output, measured, partner)] + [torch.from_numpy(scale)]
    whole, halves = GivebackSums(L), GivebackSums(L)
    whole.add(*args)
    for rows in (slice(0, 250), slice(250, None)):
        halves.add(*(a[rows] for a in args))
    share = whole.share()
    assert share is not None and torch.allclose(share, halves.share())
    assert share[(GRID > 320) & (GRID < 380)].mean() > 0.6 and share[(GRID < 200) | (GRID > 500)].mean() < 0.05
    given = output - share.double().numpy() * uniform_filter1d(output - measured, 9, axis=1, mode="nearest")
    assert _rms((given - clean)[:, 320:380]) < 0.5 * _rms((output - clean)[:, 320:380])
    assert GivebackSums(L).share() is None  # nothing added: no share (the trainer keeps the one it has)
