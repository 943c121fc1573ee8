"""Gate 3's dip detector is one model (godrun.spec.DipDetector) the recipe, the gates, the loss and the CRD share."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from godrun.controller.crd import CEL_RULES
from godrun.gates import metrics
from godrun.spec import (
    DETECTOR_LINKS,
    SEED_DETECTOR,
    DipDetector,
    Gates,
    GodRunSpec,
    Recipe,
    detector_disagreement,
)
from godrun.trainer.losses import SpectralLoss


def test_every_setting_is_named_once_by_the_recipe_and_once_by_the_gates() -> None:
    assert sorted(k.setting for k in DETECTOR_LINKS) == sorted(DipDetector.model_fields)
    assert len({k.recipe for k in DETECTOR_LINKS}) == len({k.gates for k in DETECTOR_LINKS}) == len(DETECTOR_LINKS)
    assert {k.recipe for k in DETECTOR_LINKS} <= set(Recipe.model_fields)
    assert {k.gates for k in DETECTOR_LINKS} <= set(Gates.model_fields)


def test_the_seed_defaults_live_in_the_detector() -> None:
    assert Recipe().detector == Gates().detector == SEED_DETECTOR == DipDetector()
    for link in DETECTOR_LINKS:
        seed = getattr(SEED_DETECTOR, link.setting)
        assert Recipe.model_fields[link.recipe].default == Gates.model_fields[link.gates].default == seed


@pytest.mark.parametrize("link", DETECTOR_LINKS, ids=lambda k: k.setting)
def test_each_field_reaches_its_setting(link) -> None:
    value = getattr(SEED_DETECTOR, link.setting) * 0.75 + 1e-4
    assert getattr(Recipe(**{link.recipe: value}).detector, link.setting) == value
    assert getattr(Gates.model_validate({link.gates: value}).detector, link.setting) == value


def test_the_loss_runs_the_recipes_detector() -> None:
    recipe = Recipe(dip_min_area=1e-3, baseline_guard_nm=6.0, dip_detect_sigma_nm=2.0, deriv_roi_min=330.0)
    loss = SpectralLoss(recipe, torch.linspace(200, 800, 601, dtype=torch.float64), None)
    assert loss.detector == recipe.detector
    assert loss.g == 6 and float(loss.wl[loss.roi][0]) == 330.0


def test_a_mismatch_names_the_fields_of_the_rule_broken() -> None:
    recipe, gates = Recipe(dip_min_area=1e-3), Gates()
    message = detector_disagreement(recipe, gates)
    assert message is not None and "training.dip_min_area" in message and "gates.dipMinArea" in message
    with pytest.raises(ValidationError, match="dipMinArea"):
        GodRunSpec.model_validate({"image": "x", "training": {"dip_min_area": 1e-3}})
    assert detector_disagreement(Recipe(dip_min_area=1e-3, dip_loss=False), gates) is None


def test_the_crds_rules_come_from_the_same_links() -> None:
    rules = " ".join(r["rule"] for r in CEL_RULES["GodRunSpec"])
    for link in DETECTOR_LINKS:
        camel = "".join(w.title() if i else w for i, w in enumerate(link.gates.split("_")))
        assert f"self.training.{link.recipe} == self.gates.{camel}" in rules


def test_the_gates_module_has_no_detector_of_its_own() -> None:
    assert metrics.DipDetector is DipDetector and not hasattr(metrics, "DipConfig")
