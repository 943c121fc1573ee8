#!/usr/bin/env bash
# GPU checks for a lent H100/H200 (the `device` tool): run from the repo root there.
#   prepare here once:  bash bench/gpu_wheels.sh   (pydantic & co. as wheels in .whl/, carried along)
#   run there:          bash bench/gpu.sh           (logs under $OUT, a short table last)
# Steps: (1) model step throughput, eager vs torch.compile, bs 600 bf16 (bench/gpu_step.py);
#        (2) the seed's recipe verbatim (paths aside) for one short epoch on a full-size synthetic corpus.
set -uo pipefail
OUT=${OUT:-/tmp/godrun-gpu}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 300 python3 bench/gpu_step.py --steps 40 --json "$OUT/step.json" 2>&1 | tee "$OUT/step.log"
W=/tmp/godrun-gpu-work; rm -rf "$W"; mkdir -p "$W"
( cd "$W" && python3 -m godrun data synth --out . && python3 -m godrun data panel --root . ) > "$OUT/data.log" 2>&1
( cd "$W" && timeout 240 python3 -m godrun.trainer --model mamba_tiny_uv --train_dir data/spectra_for_fold \
  --train_manifest data/spectra_for_fold/manifest_train.csv --val_manifest data/validation_panel.csv \
  --sequence_length 601 --epochs 1 --steps-per-epoch 17 --early_stop_patience 30 --bs 600 --lr 3e-4 --lr_min 3e-5 \
  --weight_decay 1e-4 --noise2noise --noise2noise_pairwise --geometry_film --film_hidden_dim 64 \
  --film_features cos_theta UVA_total UVB_total UVA_over_UVB P_UVA_mW_cm2 P_UVB_mW_cm2 UVA_norm UVB_norm \
  --dose_features_csv data/metadata/dose_features.csv --dose_sampling_weights_csv data/metadata/dose_sampling_weights.csv \
  --dose_stats_json data/metadata/dose_stats.json --lambda_weights data/spectra_for_fold/lambda_stats.npz \
  --dip_loss --dip_weight 1.0 --dip_m 6 --dip_window_half_nm 7.0 --dip_min_area 5e-4 --dip_w_area 2.5 \
  --dip_w_equivalent_width 1.5 --dip_w_centroid 2.0 --dip_w_depth 0.3 --dip_underfill_factor 2.0 \
  --dip_detect_sigma_nm 1.0 --baseline local --baseline_guard_nm 10.0 --derivative_weight 0.3 --deriv_weight_roi 0.6 \
  --deriv_roi_min 320.0 --deriv_roi_max 500.0 --curvature_weight_roi 0.3 --d_model 384 --n_layers 8 --d_state 16 \
  --amp --amp_dtype bf16 --ema --ema_decay 0.999 --cudnn_benchmark \
  --log_dir logs/god_run --checkpoint_dir checkpoints/god_run --audit_log logs/god_run/auditing_manifest.log ) \
  > "$OUT/recipe.log" 2>&1
echo "recipe exit code: $?" | tee -a "$OUT/recipe.log"
cp "$W/logs/god_run/metrics.csv" "$OUT/recipe_metrics.csv" 2>/dev/null
echo; echo "== seed recipe, one epoch of 17 steps (bs 600):"; cat "$OUT/recipe_metrics.csv" 2>/dev/null | cut -d, -f1,2,8,10,17,18,19
echo; echo "== model step (bs 600, bf16):"; tail -n 3 "$OUT/step.log"
