"""The GodRun model: seed defaults, field-specific validation messages, YAML round trip."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from godrun.spec import FILM_FEATURES, GodRun, GodRunSpec, Recipe, format_validation_error


def _run(**spec: object) -> dict:
    return {"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "metadata": {"name": "r1"}, "spec": spec}


def _error(obj: dict) -> str:
    with pytest.raises(ValidationError) as info:
        GodRun.model_validate(obj)
    return format_validation_error(info.value)


def test_recipe_defaults_are_the_seed_values() -> None:
    r = Recipe()
    assert (r.epochs, r.early_stop_patience, r.bs, r.lr, r.lr_min, r.weight_decay) == (400, 30, 600, 3e-4, 3e-5, 1e-4)
    assert (r.d_model, r.n_layers, r.d_state, r.film_hidden_dim) == (384, 8, 16, 64)
    assert r.film_features == list(FILM_FEATURES)
    assert (r.dip_w_area, r.dip_w_equivalent_width, r.dip_w_centroid, r.dip_w_depth) == (2.5, 1.5, 2.0, 0.3)
    assert r.noise2noise and r.noise2noise_pairwise and not r.val_noise2noise and not r.tta_reverse
    assert r.init_checkpoint == "checkpoints/prod/Track_H_fold_02/mamba_tiny_uv_best.pt"


def test_minimal_manifest_fills_defaults_and_round_trips() -> None:
    run = GodRun.model_validate(_run(image="ghcr.io/x/godrun:1"))
    assert run.spec.gates.psnr_mean_min == 18.0 and run.spec.gates.tail_fraction_min == 0.95
    dumped = run.model_dump(by_alias=True, mode="json")
    assert "psnrMeanMin" in dumped["spec"]["gates"] and "lr_min" in dumped["spec"]["training"]
    again = GodRun.model_validate(yaml.safe_load(yaml.safe_dump(dumped)))
    assert again == run


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"image": "i", "training": {"lr": 1e-4, "lr_min": 1e-3}}, "lr_min"),
        ({"image": "i", "training": {"film_features": ["cos_theta", "UVC_total"]}}, "spec.training.film_features.1"),
        ({"image": "i", "training": {"epochs": -1}}, "spec.training.epochs"),
        ({"image": "i", "training": {"bs": 0}}, "spec.training.bs"),
        ({"image": "i", "gates": {"tailFractionMin": 1.5}}, "spec.gates.tailFractionMin"),
        ({"image": "i", "gates": {"roiMinNm": 500, "roiMaxNm": 320}}, "roiMaxNm"),
        ({"image": "i", "training": {"deriv_roi_min": 500.0, "deriv_roi_max": 320.0}}, "deriv_roi_max"),
        ({"image": "i", "training": {"noise2noise": False}}, "noise2noise_pairwise requires noise2noise"),
        ({"image": "i", "panel": {"expectedHash": "abc"}}, "spec.panel.expectedHash"),
        ({"image": "i", "training": {"learning_rate": 1}}, "spec.training.learning_rate"),
        ({"image": ""}, "spec.image"),
        ({}, "spec.image"),
        ({"image": "i", "resources": {"cpu": "1.2.3"}}, "spec.resources.cpu"),
        ({"image": "i", "resources": {"memory": "16Gii"}}, "spec.resources.memory"),
        ({"image": "i", "resources": {"cpu": 0.5}}, "spec.resources.cpu"),
        ({"image": "i", "resources": {"nodes": 2}}, "nodes > 1 requires data.claimName"),
        ({"image": "i", "podOverrides": {"labels": {"godrun.io/run": "x"}}}, "set by the controller"),
        ({"image": "i", "podOverrides": {"labels": {"team": "a b"}}}, "not a valid label value"),
        ({"image": "i", "podOverrides": {"annotations": {"bad key!": "v"}}}, "must be Kubernetes label keys"),
        ({"image": "i", "podOverrides": {"runtimeClassName": "NVIDIA"}}, "spec.podOverrides.runtimeClassName"),
        ({"image": "i", "podOverrides": {"imagePullSecrets": ["ok", "Bad_Name"]}}, "imagePullSecrets.1"),
        ({"image": "i", "podOverrides": {"affinity": {"nodeAfinity": {}}}}, "spec.podOverrides.affinity.nodeAfinity"),
    ],
)
def test_validation_messages_name_the_field(spec: dict, needle: str) -> None:
    assert needle in _error(_run(**spec))


def test_snake_case_names_accepted_in_python() -> None:
    spec = GodRunSpec(image="i", gates={"psnr_mean_min": 20})
    assert spec.gates.psnr_mean_min == 20


def test_committed_reference_doc_matches_the_model() -> None:
    from pathlib import Path

    from godrun.docs import render

    committed = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
    assert committed.read_text() == render(), "docs/reference.md drifted: run `make docs`"


def test_quantities_take_integers_and_strings() -> None:
    res = GodRunSpec(image="i", resources={"cpu": 8, "memory": "64Gi", "shmSize": "512Mi"}).resources
    assert (res.cpu, res.memory, res.shm_size) == ("8", "64Gi", "512Mi")
    assert GodRunSpec(image="i", resources={"cpu": "500m"}).resources.cpu == "500m"


def test_recipe_and_gates_name_the_roi_and_the_dip_detector_once_in_effect() -> None:
    """The pairs must agree where training uses them: the ROI always, the detector with the dip loss."""
    err = _error(_run(image="i", gates={"roiMinNm": 300.0}))
    assert "training.deriv_roi_min/deriv_roi_max (320/500) must equal gates.roiMinNm/roiMaxNm (300/500)" in err
    moved = GodRunSpec.model_validate(
        {"image": "i", "gates": {"roiMinNm": 300.0}, "training": {"deriv_roi_min": 300.0}}
    )
    assert moved.gates.roi_min_nm == moved.training.deriv_roi_min == 300.0
    for gates in ({"dipMinArea": 1e-3}, {"dipSmoothNm": 2.0}, {"dipGuardNm": 8.0}):
        assert "gates.dipMinArea/dipSmoothNm/dipGuardNm" in _error(_run(image="i", gates=gates)), gates
    GodRunSpec.model_validate({"image": "i", "gates": {"dipSmoothNm": 2.0}, "training": {"dip_loss": False}})
    GodRunSpec.model_validate({"image": "i", "gates": {"dipGuardNm": 8.0}, "training": {"baseline": "none"}})
    GodRunSpec.model_validate(
        {"image": "i", "gates": {"dipGuardNm": 8.0, "dipSmoothNm": 2.0}, "training": {"baseline_guard_nm": 8.0,
         "dip_detect_sigma_nm": 2.0}}
    )  # fmt: skip
