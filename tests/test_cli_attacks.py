"""Bad input to `godrun run` found by red-teaming: exit 2 naming the file and the field, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from godrun.cli import main as godrun_main

HEAD = "apiVersion: godrun.io/v1alpha1\nkind: GodRun\nmetadata: {name: dup}\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (HEAD + "spec:\n  image: local\n  training: {epochs: 3, epochs: 400}\n", "duplicate key 'epochs' (line 6"),
        (HEAD + "kind: GodRun\nspec: {image: local}\n", "duplicate key 'kind' (line 4"),
        (HEAD + "spec:\n  image: local\n  gates:\n    psnrMeanMin: 30\n    psnrMeanMin: 1\n", "'psnrMeanMin'"),
    ],
)
def test_a_key_given_twice_in_the_godrun_yaml_is_refused_not_last_one_wins(tmp_path: Path, capsys, text, needle):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert godrun_main(["run", str(path), "--workdir", str(tmp_path / "wd"), "--quiet"]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()


def test_anchors_and_merge_keys_still_load(tmp_path: Path):
    from godrun.local.cli import load_manifest

    path = tmp_path / "run.yaml"
    text = HEAD + "spec:\n  image: local\n  training:\n    <<: {epochs: 3}\n    lr: 0.001\n"
    path.write_text(text.replace("{name: dup}", "{name: dup, labels: &l {a: b}, annotations: *l}"))
    run = load_manifest(path)
    assert run.spec.training.epochs == 3 and run.spec.training.lr == 0.001


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", "", "cuda:99999"])
def test_a_device_torch_does_not_know_or_this_machine_lacks_is_bad_input(device: str):
    from godrun.errors import InputError
    from godrun.model.inference import resolve_device

    with pytest.raises(InputError, match="--device"):
        resolve_device(device)
    assert str(resolve_device("cpu")) == "cpu"


def test_a_csv_input_with_a_column_named_twice_is_refused_not_read_as_its_first(tmp_path: Path):
    """pandas reads `group_id,...,group_id` as group_id and group_id.1: the training manifest's second
    group_id (the one a reader of the file may take for the real one) was silently ignored."""
    from godrun.data.loader import read_manifest
    from godrun.errors import InputError

    path = tmp_path / "manifest_train.csv"
    path.write_text(
        "\ufeffspectrum_id,group_id,treatment,sample,angle,polarity,replicate,pair_id,path,reference_path,group_id\n"
        "a,g1,0,s,na,na,0,p0,spectra/a.npy,,g9\n"
    )
    with pytest.raises(InputError, match=r"manifest_train\.csv: duplicate column 'group_id'"):
        read_manifest(path)
