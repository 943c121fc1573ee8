"""The training loop: data ► model ► epochs (train, panel, checkpoints, logs) ► early stop.

Reads top to bottom: `train(recipe)` sets up, optionally resumes from `<checkpoint_dir>/<model>_last.pt`,
then runs epochs. Everything random is drawn from generators seeded by (seed, epoch, rank), so a
resumed run replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from godrun.contract import files
from godrun.contract.checkpoint import Checkpoint, CheckpointMeta, EarlyStopState, ResumeState
from godrun.errors import InputError
from godrun.fsio import code_version, remove_stale_temps, sha256_file, termination_path, write_termination
from godrun.gates.ranking import RankKey, better, composite_score, gates_passed, rank_key
from godrun.model import checkpoint as ckpt_io
from godrun.model import normalise
from godrun.model.inference import build_model, denoise, resolve_device
from godrun.model.mamba import fused_scan_error, scan_backend
from godrun.model.subspace import GivebackSums, SubspacePrior, with_prior
from godrun.paths import confine, writable_file
from godrun.spec import RUN_PATH_FIELDS, Gates, Recipe
from godrun.trainer import dataset as ds
from godrun.trainer import telemetry
from godrun.trainer.ema import build_ema
from godrun.trainer.losses import SpectralLoss

if TYPE_CHECKING:
    from godrun.model.network import MambaTinyUV

GRAD_CLIP_NORM = 1.0  # fixed safety clip; the dip loss's relative errors can spike on shallow dips
RESUME_IGNORED = frozenset({"metrics_port", "num_workers", "device"})
LOSS_KEYS = ("mse", "deriv", "deriv_roi", "curv_roi", "dip")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class EarlyStop:
    best_score: float = -math.inf  # composite score of the best epoch (for the log and TrainResult)
    best_epoch: int | None = None
    bad_epochs: int = 0
    finished: bool = False
    best_rank: RankKey | None = None  # godrun.gates.ranking.rank_key of the best epoch


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int | None
    best_score: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ set-up helpers


def _threads(dist: Dist) -> int:
    """GODRUN_NUM_THREADS, else 2 per machine split over local processes; 1 when the CPUs are already busy:
    OpenMP threads spin-waiting for a busy core cost far more than a second thread saves (bench/README.md)."""
    env = os.environ.get("GODRUN_NUM_THREADS")
    if env:
        return max(1, int(env))
    cpus = os.cpu_count() or 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cpus:
        return 1
    return max(1, min(2, cpus) // dist.world)


def _threads_note(device: torch.device) -> str:
    n = torch.get_num_threads()
    return f" ({n} thread{'s' if n != 1 else ''})" if device.type == "cpu" else ""


def _device(recipe: Recipe, dist: Dist) -> torch.device:
    dev = resolve_device(recipe.device)
    if dev.type == "cuda":
        torch.cuda.set_device(dist.local_rank)
        torch.backends.cudnn.benchmark = recipe.cudnn_benchmark
        return torch.device("cuda", dist.local_rank)
    torch.set_num_threads(_threads(dist))
    return dev


def _fallback_note(device: torch.device) -> str:
    error = fused_scan_error() if device.type == "cuda" else None
    return f" (mamba_ssm's fused scan unavailable: {error}; about 30x slower)" if error else ""


def _hash(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def data_hashes(recipe: Recipe) -> dict[str, str | None]:
    return {
        "train_manifest": _hash(recipe.train_manifest),
        "val_manifest": _hash(recipe.val_manifest),
        "lambda_weights": _hash(recipe.lambda_weights),
        "dose_features_csv": _hash(recipe.dose_features_csv),
        "dose_sampling_weights_csv": _hash(recipe.dose_sampling_weights_csv),
        "dose_stats_json": _hash(recipe.dose_stats_json),
    }


def _config_diff(old: dict, new: dict) -> list[str]:
    keys = (set(old) | set(new)) - RESUME_IGNORED
    return sorted(k for k in keys if old.get(k) != new.get(k))


def _freeze(model: MambaTinyUV, recipe: Recipe) -> None:
    """Act B with a frozen backbone: only the model's act_b_parameters() keep training."""
    if not recipe.freeze_backbone:
        return
    trained = {id(p) for p in model.act_b_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)


def _confine_paths(recipe: Recipe) -> None:
    """In a GodRun every recipe path must stay inside the run volume, symlinks resolved (godrun.paths)."""
    for name in RUN_PATH_FIELDS["Recipe"]:
        value = getattr(recipe, name)
        if value:
            confine(value, f"--{name}")
    writable_file(recipe.audit_log, "--audit_log", (".log",))
    for flag in ("checkpoint_dir", "log_dir"):  # outputs go below them: a file there is refused before any work
        folder = Path(getattr(recipe, flag))
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise InputError(f"--{flag} {folder}: exists and is not a folder (a file or a symlink)")


def _refuse_leaks(recipe: Recipe) -> None:
    """Refuse a training manifest that shares a group_id, spectrum_id or content hash with the panel.

    Read from the manifests before any spectrum is loaded; the loader then holds every file to the
    manifest's hashes (--verify-data), so what the hashes say is what the files hold.
    """
    from godrun.data.loader import read_manifest
    from godrun.data.panel import leakage

    for flag, path in (("--train_manifest", recipe.train_manifest), ("--val_manifest", recipe.val_manifest)):
        if not Path(path).is_file():
            raise InputError(f"{flag}: manifest not found: {path}")
    problems = leakage(read_manifest(recipe.train_manifest), read_manifest(recipe.val_manifest))
    if problems:
        raise InputError(f"--train_manifest {recipe.train_manifest} leaks into --val_manifest: " + "; ".join(problems))


def _refuse_value_leaks(recipe: Recipe, train: ds.SplitData, panel: ds.SplitData) -> None:
    """Refuse training rows that hold a panel spectrum's or reference's values (re-encoded, renamed, re-hashed)."""
    from godrun.data.overlap import spectra_and_references, value_leakage

    tid, pid = train.meta["spectrum_id"].astype(str).tolist(), panel.meta["spectrum_id"].astype(str).tolist()
    problems = value_leakage(
        spectra_and_references(train.raw.numpy(), train.reference.numpy(), tid),
        spectra_and_references(panel.raw.numpy(), panel.reference.numpy(), pid),
    )
    if problems:
        raise InputError(f"--train_manifest {recipe.train_manifest} leaks into --val_manifest: " + "; ".join(problems))


def _check_bounds(recipe: Recipe, gates: Gates, wl: np.ndarray) -> None:
    """Every wavelength bound of the recipe and the gates inside the grid the data declares."""
    from godrun.data.loader import check_inside_grid

    bounds = [
        ("--deriv_roi_min", recipe.deriv_roi_min),
        ("--deriv_roi_max", recipe.deriv_roi_max),
        ("--roi-min-nm", gates.roi_min_nm),
        ("--roi-max-nm", gates.roi_max_nm),
    ]
    check_inside_grid(bounds, wl, str(files.wavelength_grid(recipe.train_dir)))


# ------------------------------------------------------------------ panel


def panel_eval(
    model: torch.nn.Module,
    panel: ds.SplitData,
    recipe: Recipe,
    wl: np.ndarray,
    device: torch.device,
    gates: Gates | None = None,
) -> dict[str, Any]:
    """The GodRun's gates on de-normalised panel predictions (clean references unless --val_noise2noise)."""
    from godrun.gates.metrics import evaluate_gates, panel_metrics

    gates = gates or Gates()
    params = {"offset": panel.offset.numpy(), "scale": panel.scale.numpy()}
    bs, tta = max(recipe.bs, 64), recipe.tta_reverse
    pred = denoise(model, panel.x, params, panel.cond, recipe, wl, batch_size=bs, device=device, tta_reverse=tta)
    gen = torch.Generator().manual_seed(recipe.seed)
    target = ds.targets_for(panel, torch.arange(len(panel)), recipe, gen, panel=True).numpy()
    per_spectrum = panel_metrics(pred, target, panel.raw.numpy(), wl, gates)
    verdict = evaluate_gates(per_spectrum, gates)
    return {
        "panel_psnr_mean": verdict.psnr_mean,
        "panel_psnr_std": verdict.psnr_std,
        "panel_sam_mean": verdict.sam_mean,
        "panel_tail_ratio": verdict.tail_ratio,
        "panel_roi_ratio": verdict.roi_ratio,
        "panel_spurious": verdict.spurious_peaks,
        "panel_downstream_err": float(per_spectrum["downstream_err"].mean()),
        "panel_downstream_err_raw": float(per_spectrum["downstream_err_raw"].mean()),
        "panel_gates_passed": gates_passed(verdict),
        "panel_score": composite_score(verdict),
        "rank": rank_key(verdict),  # the evaluator's ranking: gates passed, then the composite score
        "verdict": verdict.verdict,
        "failed_gates": list(verdict.failed_gates),
    }


def through_prior(model: torch.nn.Module, pred: torch.Tensor, x: torch.Tensor, b: ds.Batch) -> torch.Tensor:
    """A training batch's prediction through the subspace prior, in the grid's own frame: a jittered batch is
    moved back first and forth again after (the prior's components sit at fixed wavelengths); the points the
    cutout hid stay 0, as in the target."""
    back = None if b.shift is None or not bool(b.shift.any()) else b.shift.to(pred.device)
    if back is not None:
        pred, x = ds.shift_spectra(pred, -back), ds.shift_spectra(x, -back)
    pred = with_prior(model, pred, x)
    if back is not None:
        pred = ds.shift_spectra(pred, back)
    return pred if b.cutout is None else pred.masked_fill(b.cutout.to(pred.device), 0.0)


BALANCE_BATCHES = 8


@torch.no_grad()
def dip_balance(
    model: torch.nn.Module, loss_fn: SpectralLoss, data: ds.SplitData, recipe: Recipe, wl_step: float, dev: torch.device
) -> float:
    """The dip loss's scale (Recipe.dip_balance): min(1, the median over BALANCE_BATCHES training batches (fixed
    rows and augmentation, from the recipe's seed) of pixel terms / weighted dip loss), with the prior's output
    for the raw inputs as the prediction (the median: one batch with a spike must not set it). That prediction
    is already close to the trained model's on the spectra's broad shape, so what the dip loss charges it is
    mostly the target's own dip-feature noise, which no step can remove. A pure function of the data, the seed
    and the prior's buffers: a resume gets the same scale."""
    gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 999_983)
    n = min(len(data), BALANCE_BATCHES * recipe.bs)
    order = torch.randperm(len(data), generator=gen)[:n]
    ratios = []
    for i in range(0, n, recipe.bs):
        b = ds.make_batch(data, order[i : i + recipe.bs], recipe, gen, wl_step, train=True)
        x = b.x.to(dev)
        pred = through_prior(model, x, x, b)
        win = None if b.windows is None else b.windows.to(dev)
        _, parts = loss_fn(pred, b.y.to(dev), b.offset.to(dev), b.scale.to(dev), win)
        weighted = recipe.dip_weight * parts.get("dip", 0.0)
        pixel = parts["total"] - weighted * loss_fn.dip_scale
        ratios.append(pixel / max(weighted, 1e-30))
    return float(min(1.0, np.median(ratios)))


# ------------------------------------------------------------------ the loop


def _eta(history: list[dict[str, Any]], epochs: int) -> str:
    """Time left to the epoch cap at the mean epoch time so far (early stopping may end sooner)."""
    left = epochs - int(history[-1]["epoch"])
    secs = left * sum(h["seconds"] for h in history) / len(history)
    return f"{secs:.0f}s" if secs < 120 else f"{secs / 60:.1f}min"


class Trainer:
    """One training run; `__init__` prepares it in the order below, `run()` trains."""

    def __init__(
        self, recipe: Recipe, *, gates: Gates | None = None, verify_data: bool = True, log: bool = True
    ) -> None:
        self.recipe, self.gates, self.verify_data = recipe, gates or Gates(), verify_data
        self.dist = Dist.from_env()
        self._start_processes()
        self._load_data()  # before anything is written: bad input leaves nothing behind
        warm = self._build_model()
        self._start_logging(log, warm)  # only once the inputs (the warm start too) are known good
        self._build_optimisation()
        self._start_bookkeeping()
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
            self._publish(self.history[-1] if self.history else None)
        self._balance_dip()  # after a restore: it reads the prior's buffers

    # -------------------------------------------------------------- set-up steps

    def _start_processes(self) -> None:
        """Join the process group (torchrun), pick the device, CPU threads and the selective-scan backend."""
        self.owns_group = self.dist.world > 1 and not torch.distributed.is_initialized()
        if self.owns_group:
            backend = "nccl" if resolve_device(self.recipe.device).type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = _device(self.recipe, self.dist)
        self.scan_backend = scan_backend(self.device)  # may refuse (GODRUN_REQUIRE_FUSED_SCAN) before any output
        port = self.recipe.metrics_port if self.dist.main else None
        self.prom = telemetry.PromMetrics(port, self.scan_backend)  # a port in use is refused before any output

    def _load_data(self) -> None:
        """Grid, loss weights, FiLM statistics, training rows and the panel; leaks and bad bounds refused first."""
        r = self.recipe
        _confine_paths(r)
        _refuse_leaks(r)
        self.wl = ds.load_wavelengths(r)
        _check_bounds(r, self.gates, self.wl)
        self.lam = ds.load_lambda_weights(r)
        self.cond_stats = ds.cond_stats_for(r)
        self.train_data = ds.load_split(
            r, r.train_manifest, self.cond_stats, with_weights=True, verify=self.verify_data, require_references=False
        )
        self.panel = ds.load_split(r, r.val_manifest, self.cond_stats, with_weights=False, verify=self.verify_data)
        _refuse_value_leaks(r, self.train_data, self.panel)

    def _build_model(self) -> list[str] | None:
        """The model, resumed from `<model>_last.pt` when it exists, else warm-started (returns the keys the
        warm start added); frozen parts; DDP."""
        r = self.recipe
        torch.manual_seed(r.seed)
        self.model = build_model(r)
        self.init_sha: str | None = None
        self.last = ckpt_io.last_path(r.checkpoint_dir, r.model)
        if self.dist.main:  # half-written checkpoints/metrics of a killed run: never resumed from, never archived
            for folder in (r.checkpoint_dir, r.log_dir):
                remove_stale_temps(folder)
        self.resume_ckpt = ckpt_io.load_checkpoint(self.last) if self.last.is_file() else None
        warm: list[str] | None = None
        if self.resume_ckpt is not None:
            self._check_resumable(self.resume_ckpt)
            if self.dist.main:
                from godrun.model.written import record_resumed

                record_resumed(r.checkpoint_dir, [ckpt_io.best_path(r.checkpoint_dir, r.model), self.last])
        else:
            self._refuse_foreign_checkpoints()
            if self.dist.main:
                from godrun.model.written import forget_written

                forget_written(r.checkpoint_dir)
        if self.resume_ckpt is None and r.init_checkpoint:
            warm = self._warm_start(r.init_checkpoint)
        if self.resume_ckpt is None and self.model.subspace is not None:  # a resume restores its buffers
            self.model.subspace.fit(self.train_data.raw.numpy(), self.train_data.partner.numpy())
        _freeze(self.model, r)
        self.model.to(self.device)
        self.net: torch.nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return warm

    def _refuse_foreign_checkpoints(self) -> None:
        foreign = ckpt_io.foreign_checkpoints(self.recipe.checkpoint_dir, self.recipe.model)
        if foreign:
            raise InputError(
                f"--checkpoint_dir {self.recipe.checkpoint_dir}: holds {', '.join(foreign)}, which this training "
                "did not write (the evaluator judges every *.pt there); use another --checkpoint_dir or move them"
            )

    def _check_resumable(self, ckpt: Checkpoint) -> None:
        if ckpt.resume is None:
            raise InputError(f"{self.last}: holds no optimiser state (not a last checkpoint); delete it to start over")
        diff = _config_diff(ckpt.meta.config, self.recipe.model_dump())
        if diff:
            raise InputError(
                f"{self.last} was written by a different recipe (differs in {', '.join(diff)}); "
                "use another --checkpoint_dir or delete it to start over"
            )
        ckpt_io.check_fits(self.model.state_dict(), ckpt.model, str(self.last))  # a wrong shape: bad input, not a crash

    def _warm_start(self, path: str) -> list[str]:
        init = ckpt_io.load_checkpoint(path)
        added = ckpt_io.warm_start(self.model, init.weights(), path)
        self.init_sha = sha256_file(path)
        return added

    def _start_logging(self, log: bool, warm: list[str] | None) -> None:
        on = self.dist.main and log
        self.logger = telemetry.setup_logger(self.recipe.log_dir, enabled=on)
        self.progress = telemetry.Progress(self.logger, enabled=on)
        if warm is not None:
            r = self.recipe
            self.logger.info("warm start from %s (sha256 %s); new keys: %s", r.init_checkpoint, self.init_sha, warm)
        if self.model.subspace is not None and self.resume_ckpt is None:
            n, rank = len(self.train_data), self.recipe.subspace_rank
            prior = self.model.subspace
            guard = f"guard thresholds {float(prior.guard.min()):.3g}-{float(prior.guard.max()):.3g}"
            guard += f", give-back on {int((prior.giveback > 0).sum())} of {prior.seq_len} points"
            fitted = f"fitted on {n} training spectra, {guard}" if prior.fitted else f"off: {n} spectra, too few"
            self.logger.info("subspace prior (rank %d, window %d): %s", rank, self.recipe.subspace_window, fitted)

    def _build_optimisation(self) -> None:
        """AdamW on the trainable parameters, the cosine schedule, EMA, the loss and mixed precision."""
        r = self.recipe
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        per_step = r.bs * self.dist.world
        self.steps = r.steps_per_epoch or max(1, math.ceil(len(self.train_data) / per_step))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=r.epochs * self.steps, eta_min=r.lr_min)
        self.ema = build_ema(self.model, r.ema_decay, r.ema_warmup) if r.ema else None
        lam_np = self.lam
        if r.noise_weight_power != 0:
            roi = (self.wl >= r.deriv_roi_min) & (self.wl <= r.deriv_roi_max)
            var = ds.replicate_noise_variance(self.train_data)
            lam_np = ds.noise_weighted(lam_np, var, r.noise_weight_power, roi)
        wl, lam = torch.from_numpy(self.wl), torch.from_numpy(lam_np)
        self.loss_fn = SpectralLoss(r, wl, lam).to(self.device)
        self.wl_step = float(np.median(np.diff(self.wl)))
        self.amp_dtype = torch.bfloat16 if r.amp_dtype == "bf16" else torch.float16
        use_scaler = r.amp and r.amp_dtype == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def _start_bookkeeping(self) -> None:
        """Early-stop state, history, input hashes, code version and the Prometheus endpoint."""
        self.state = EarlyStop()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 1
        self.hashes = data_hashes(self.recipe)
        self.code_version = code_version()
        self.logger.info("selective scan backend: %s%s", self.scan_backend, _fallback_note(self.device))
        if self.prom.port is not None:
            self.logger.info("prometheus metrics on :%d/metrics", self.prom.port)

    def _balance_dip(self) -> None:
        r, prior = self.recipe, self.model.subspace
        fitted = prior is not None and bool(prior.fitted)
        if not (r.dip_balance and r.noise2noise and r.dip_loss and r.dip_weight > 0 and fitted):
            return  # clean targets have no noise floor to balance
        scale = dip_balance(self.model, self.loss_fn, self.train_data, r, self.wl_step, self.device)
        self.loss_fn.dip_scale = scale
        self.logger.info("dip balance: the dip loss is scaled by %.3g (its floor against the pixel terms)", scale)

    # -------------------------------------------------------------- state

    def _restore(self, c: Checkpoint) -> None:
        res = c.resume
        assert res is not None  # _check_resumable refused it before anything was written
        self.model.load_state_dict(dict(c.model))
        self.opt.load_state_dict(res.optimizer)
        self.sched.load_state_dict(res.scheduler)
        if self.ema is not None and c.ema is not None:
            self.ema.module.load_state_dict(dict(c.ema))
            self.ema.n_averaged.fill_(res.ema_n_averaged)
        if res.rng is not None:
            torch.set_rng_state(res.rng)
        self.state = EarlyStop(**res.early_stop.model_dump())
        self.history = list(res.history)
        self.start_epoch = c.meta.epoch + 1
        self.init_sha = c.meta.init_checkpoint_sha256
        self.logger.info("resumed from %s at epoch %d", self.last, c.meta.epoch)

    def _checkpoint(self, epoch: int, panel: dict[str, Any], full: bool) -> Checkpoint:
        """The best checkpoint (`full` False) or the last one (with what a resume needs)."""
        meta = CheckpointMeta(
            config=self.recipe.model_dump(),
            epoch=epoch,
            panel=panel,
            norm=normalise.norm_meta(),
            cond_stats=self.cond_stats,
            data_hashes=self.hashes,
            code_version=self.code_version,
            init_checkpoint_sha256=self.init_sha,
            scan_backend=self.scan_backend,
        )
        resume = None
        if full:
            resume = ResumeState(
                optimizer=self.opt.state_dict(),
                scheduler=self.sched.state_dict(),
                ema_n_averaged=0 if self.ema is None else int(self.ema.n_averaged.item()),
                rng=torch.get_rng_state(),
                early_stop=EarlyStopState(**vars(self.state)),
                history=self.history,
            )
        ema = None if self.ema is None else self.ema.module.state_dict()
        return Checkpoint(model=self.model.state_dict(), meta=meta, ema=ema, resume=resume)

    def _audit(self) -> None:
        r = self.recipe
        entries: dict[str, object] = {f"sha256 {k}": v for k, v in self.hashes.items()}
        entries["sha256 init_checkpoint"] = f"{r.init_checkpoint} {self.init_sha}"
        entries["sha256 config"] = ckpt_io.config_sha256(r.model_dump())
        entries["code_version"] = self.code_version
        entries["resume_from_epoch"] = self.start_epoch - 1
        entries["world_size"] = self.dist.world
        entries["device"] = str(self.device)
        entries["scan_backend"] = self.scan_backend
        telemetry.write_audit(r.audit_log, entries, "train start" if self.start_epoch == 1 else "train resume")

    # -------------------------------------------------------------- epochs

    def train_epoch(self, epoch: int) -> dict[str, float]:
        r, d = self.recipe, self.dist
        n = self.steps * r.bs * d.world
        order = ds.epoch_order(self.train_data, n, r.seed, epoch)[d.rank :: d.world]
        gen = torch.Generator().manual_seed((r.seed * 1_000_003 + epoch) * 64 + d.rank + 1)
        sums = dict.fromkeys(("total", *LOSS_KEYS), 0.0)
        giveback = self._giveback_sums()
        self.net.train()
        self.progress.start_epoch(epoch, r.epochs, self.steps)
        for i in range(self.steps):
            idx = order[i * r.bs : (i + 1) * r.bs]
            b = ds.make_batch(self.train_data, idx, r, gen, self.wl_step, train=True)
            x, y, scale = b.x.to(self.device), b.y.to(self.device), b.scale.to(self.device)
            cond = None if b.cond is None else b.cond.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=r.amp):
                pred = self.net(x, cond)
            if self.model.subspace is not None:  # the model is prior ∘ network, trained as it predicts
                pred = through_prior(self.model, pred.float(), x, b)
            if giveback is not None:
                paired = self.train_data.partner[idx] != idx
                rows = (paired if b.cutout is None else paired & ~b.cutout.any(1)).to(self.device)
                giveback.add(pred.detach()[rows], x[rows], y[rows], scale[rows])
            win = None if b.windows is None else b.windows.to(self.device)
            loss, parts = self.loss_fn(pred, y, b.offset.to(self.device), scale, win)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], GRAD_CLIP_NORM)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            self.progress.step(i + 1, parts["total"])
            self.prom.add_spectra(len(idx) * d.world)
        self.progress.end_epoch()
        self._learn_giveback(giveback)
        return {k: v / self.steps for k, v in sums.items()}

    def _giveback_sums(self) -> GivebackSums | None:
        """The give-back's statistics over this epoch's steps, where every paired row's target is its replicate
        partner (pairwise Noise2Noise; other targets may hold the input's own noise: the fit's share stays)."""
        r, prior = self.recipe, self.model.subspace
        if prior is None or not bool(prior.fitted) or not (r.noise2noise and r.noise2noise_pairwise):
            return None
        return GivebackSums(prior.seq_len)

    def _learn_giveback(self, sums: GivebackSums | None) -> None:
        """The give-back's share from the network's outputs this epoch, in the model and its average: the prior's
        bias that `fit` measured on the raw inputs is the network's too only at the first step (module doc of
        godrun.model.subspace)."""
        if sums is None:
            return
        if self.dist.world > 1:
            sums.sums = sums.sums.to(self.device)
            torch.distributed.all_reduce(sums.sums)
            sums.sums = sums.sums.cpu()
        share = sums.share()
        if share is None:
            return
        for model in (self.model, *(() if self.ema is None else (self.ema.module,))):
            prior = getattr(model, "subspace", None)
            if isinstance(prior, SubspacePrior):
                prior.giveback.copy_(share.to(prior.giveback))

    def _update_best(self, epoch: int, panel: dict[str, Any]) -> bool:
        """Early-stop bookkeeping by the evaluator's ranking (godrun.gates.ranking) under the GodRun's gates."""
        improved = better(panel["rank"], self.state.best_rank)
        if improved:
            self.state.best_rank, self.state.best_score = panel["rank"], panel["panel_score"]
            self.state.best_epoch, self.state.bad_epochs = epoch, 0
        else:
            self.state.bad_epochs += 1
        r = self.recipe
        patience_out = r.early_stop_patience > 0 and self.state.bad_epochs >= r.early_stop_patience
        self.state.finished = patience_out or epoch >= r.epochs
        return improved

    def run(self, stop_after_epoch: int | None = None) -> TrainResult:
        r, d = self.recipe, self.dist
        if self.state.finished or self.start_epoch > r.epochs:
            self.logger.info("nothing to do: %s already finished at epoch %d", self.last, self.start_epoch - 1)
            return self._result()
        if d.main:
            self._audit()
            self.logger.info(
                "training %d spectra (%d steps/epoch x bs %d x %d proc), panel %d spectra, device %s%s",
                len(self.train_data),
                self.steps,
                r.bs,
                d.world,
                len(self.panel),
                self.device,
                _threads_note(self.device),
            )
        for epoch in range(self.start_epoch, r.epochs + 1):
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            t_train = time.perf_counter() - t0
            stop = torch.zeros(1, device=self.device)  # NCCL broadcasts device tensors only
            if d.main:
                stop[0] = float(self._end_epoch(epoch, losses, t0, t_train))
            if d.world > 1:
                torch.distributed.broadcast(stop, src=0)
                torch.distributed.barrier()
            if stop.item() or (stop_after_epoch is not None and epoch >= stop_after_epoch):
                break
        return self._result()

    def _end_epoch(self, epoch: int, losses: dict[str, float], t0: float, t_train: float) -> bool:
        """Judge the epoch on the panel, keep the best checkpoint, log it; True when training is finished."""
        eval_model = self.ema.module if self.ema is not None else self.model
        panel = panel_eval(eval_model, self.panel, self.recipe, self.wl, self.device, self.gates)
        improved = self._update_best(epoch, panel)
        row = self._history_row(epoch, losses, panel, time.perf_counter() - t0, t_train)
        self._save_checkpoints(epoch, panel, improved)
        self._report_epoch(row, panel, improved)
        return self.state.finished

    def _history_row(
        self, epoch: int, losses: dict[str, float], panel: dict[str, Any], seconds: float, t_train: float
    ) -> dict[str, Any]:
        row = {"epoch": epoch, "loss": losses["total"], **{f"loss_{k}": losses.get(k) for k in LOSS_KEYS}}
        row |= {k: v for k, v in panel.items() if k.startswith("panel_")}
        row |= {
            "best_epoch": self.state.best_epoch,
            "lr": self.opt.param_groups[0]["lr"],
            "seconds": seconds,
            "spectra_per_s": self.steps * self.recipe.bs * self.dist.world / max(t_train, 1e-9),
        }
        self.history.append(row)
        return row

    def _save_checkpoints(self, epoch: int, panel: dict[str, Any], improved: bool) -> None:
        r = self.recipe
        if improved:
            ckpt_io.save_checkpoint(ckpt_io.best_path(r.checkpoint_dir, r.model), self._checkpoint(epoch, panel, False))
        ckpt_io.save_checkpoint(self.last, self._checkpoint(epoch, panel, True))

    def _report_epoch(self, row: dict[str, Any], panel: dict[str, Any], improved: bool) -> None:
        """metrics.csv, the log line and the Prometheus gauges for one finished epoch."""
        r, epoch = self.recipe, row["epoch"]
        telemetry.write_metrics_csv(files.metrics_csv(r.log_dir), self.history)
        self.logger.info(
            "epoch %d/%d loss %.4g panel psnr %.2f±%.2f sam %.2f tail %.3f roi %.3f spurious %s gates %d/4%s "
            "lr %.3g %.1fs %.0f spectra/s eta %s",
            epoch,
            r.epochs,
            row["loss"],
            _nz(panel["panel_psnr_mean"]),
            _nz(panel["panel_psnr_std"]),
            _nz(panel["panel_sam_mean"]),
            _nz(panel["panel_tail_ratio"]),
            _nz(panel["panel_roi_ratio"]),
            panel["panel_spurious"],
            panel["panel_gates_passed"],
            " *best*" if improved else "",
            row["lr"],
            row["seconds"],
            row["spectra_per_s"],
            _eta(self.history, r.epochs),
        )
        self._publish(row)
        if self.state.finished and epoch < r.epochs:
            self.logger.info("early stop: no better panel ranking for %d epochs", self.state.bad_epochs)

    def _publish(self, row: dict[str, Any] | None) -> None:
        """Prometheus gauges from one metrics row (on resume: the last checkpointed epoch, so no dip)."""
        if row is None:
            return
        self.prom.update(
            epoch=row["epoch"],
            epochs=self.recipe.epochs,
            loss=row.get("loss"),
            panel_psnr_mean_decibels=row.get("panel_psnr_mean"),
            panel_sam_mean_degrees=row.get("panel_sam_mean"),
            best_epoch=self.state.best_epoch,
            epoch_seconds=row.get("seconds"),
            lr=row.get("lr"),
        )

    def _result(self) -> TrainResult:
        last_epoch = int(self.history[-1]["epoch"]) if self.history else 0
        stopped = self.state.finished and last_epoch < self.recipe.epochs
        return TrainResult(last_epoch, self.state.best_epoch, self.state.best_score, stopped, list(self.history))

    def write_final_progress(self) -> None:
        """Rank 0's last gauges as the termination message, where the stage has one (a Job's container, the local
        executor): a run that ends between two progress polls still reports its epochs."""
        path = termination_path(None)
        if self.dist.main and path is not None and (text := self.prom.final_text()):
            write_termination(path, text)

    def close(self) -> None:
        self.prom.close()
        telemetry.close_logger(self.logger)
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _nz(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def train(
    recipe: Recipe,
    *,
    gates: Gates | None = None,
    verify_data: bool = True,
    log: bool = True,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train (or resume) `recipe`, ranking epochs by `gates`; `stop_after_epoch` ends early as a preemption would."""
    trainer = Trainer(recipe, gates=gates, verify_data=verify_data, log=log)
    try:
        result = trainer.run(stop_after_epoch=stop_after_epoch)
        trainer.write_final_progress()
        return result
    finally:
        trainer.close()
