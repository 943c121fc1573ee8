"""A killed `godrun data import`: SIGTERM/SIGINT remove its temp folder and leave OUT untouched; what a SIGKILLed
one left beside OUT is removed (and reported) by the next import into OUT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_data_import_attacks import _dataset, _import

from godrun.cli import main as godrun_main
from godrun.data.import_out import _host

# the real import, stopped before its second spectrum until a signal ends the wait: however late the test
# sees the first spectrum written (a loaded machine), its signal lands mid-import
# (SIGINT as at a terminal: a runner that starts the suite in the background has it ignored, and children inherit that)
DRIVER = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from godrun.data import import_read
    read = import_read.Reader.spectrum
    calls = []
    def slow(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            time.sleep(120)
        return read(self, *a, **k)
    import_read.Reader.spectrum = slow
    from godrun.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _start(sp: Path, meta: Path, out: Path) -> subprocess.Popen[bytes]:
    args = ["data", "import", str(sp), "--metadata", str(meta), "--out", str(out), "--panel-group", "g3"]
    args += ["--references", "replicate-mean"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stderr=subprocess.PIPE)


def _temp_folders(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.import-*"))


def _started(proc: subprocess.Popen[bytes], out: Path) -> None:
    """Wait until the import has made its temp folder and written a spectrum into it."""
    deadline = time.monotonic() + 120
    while not any(p.glob("data/spectra_for_fold/spectra/*.npy") for p in _temp_folders(out)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the import never started writing"
        time.sleep(0.02)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_mid_import_removes_the_temp_folder_and_leaves_out_alone(tmp_path, signum, code):
    sp, meta = _dataset(tmp_path)
    out = tmp_path / "OUT"
    out.mkdir()  # an empty OUT the user made: still there, still empty
    proc = _start(sp, meta, out)
    _started(proc, out)
    proc.send_signal(signum)
    assert proc.wait(60) == code
    assert _temp_folders(out) == []
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_sigkilled_import_leaves_a_temp_folder_the_next_import_removes(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    out = tmp_path / "OUT"
    proc = _start(sp, meta, out)
    _started(proc, out)
    proc.kill()
    proc.wait(60)
    (stale,) = _temp_folders(out)
    assert not out.exists()
    assert _import(sp, meta, out) == 0
    assert _temp_folders(out) == []
    assert f"removed {stale}" in capsys.readouterr().err
    assert (out / "data/manifest_hashes.json").is_file()


def test_a_running_imports_temp_folder_is_left_alone(tmp_path, capsys):
    """Another import into OUT still running (its pid alive): its folder is not the next one's to remove."""
    sp, meta = _dataset(tmp_path)
    out = tmp_path / "OUT"
    busy = tmp_path / f".OUT.import-{_host()}-{os.getppid()}-abcd1234"
    busy.mkdir()
    assert _import(sp, meta, out) == 0
    assert busy.is_dir()


def test_another_hosts_temp_folder_is_reported_not_removed(tmp_path, capsys):
    """OUT on a volume two machines share: a pid says nothing about another host's processes."""
    sp, meta = _dataset(tmp_path)
    other = tmp_path / f".OUT.import-{_host()}x.example-{_dead_pid()}-abcd1234"
    other.mkdir()
    assert _import(sp, meta, tmp_path / "OUT") == 0
    assert other.is_dir() and f"{other} is the temp folder of another import" in capsys.readouterr().err


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_temp_folder_of_an_older_import_without_a_pid_is_reported_not_removed(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    old = tmp_path / ".OUT.import-k3j_x9q2"
    old.mkdir()
    assert godrun_main(["data", "import", str(sp), "--metadata", str(meta), "--out", str(tmp_path / "OUT"),
                        "--panel-group", "g3", "--references", "replicate-mean"]) == 0  # fmt: skip
    assert old.is_dir() and f"{old} is the temp folder of another import" in capsys.readouterr().err


def test_out_given_as_dot_builds_beside_the_folder_not_inside_it(tmp_path, monkeypatch):
    sp, meta = _dataset(tmp_path)
    out = tmp_path / "OUT"
    out.mkdir()
    monkeypatch.chdir(out)
    assert _import(sp, meta, Path(".")) == 0
    assert (out / "data/manifest_hashes.json").is_file()
    assert _temp_folders(out) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_request_during_the_final_rename_does_not_fail_a_finished_import(tmp_path, monkeypatch, capsys, signum):
    """The signal is held while OUT is put in place; once OUT is there, the import has finished: exit 0, OUT
    complete, the late signal reported (not exit 130/143 with OUT written, which a retry would then refuse)."""
    from godrun.data import import_out

    sp, meta = _dataset(tmp_path)
    out = tmp_path / "OUT"
    rename = os.rename

    def rename_after_a_signal(src, dst):
        os.kill(os.getpid(), signum)  # held back: lands while the rename runs
        rename(src, dst)

    monkeypatch.setattr(import_out.os, "rename", rename_after_a_signal)
    assert _import(sp, meta, out) == 0
    assert (out / "data").is_dir() and _temp_folders(out) == []
    assert f"note: {signal.Signals(signum).name} arrived while" in capsys.readouterr().err
