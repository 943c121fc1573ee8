"""Images for the node tests, made on this machine (no registry is reachable from it).

Base images come from mmdebstrap (Debian bookworm minbase); the product's images come from the repository's
Dockerfile through `buildah bud --pull=never` (vfs storage), with those bases passed as build arguments. Every
image is a docker-archive tarball in ${GODRUN_CACHE:-~/.cache/godrun}/images named by the hash of what went
into it (for Dockerfile targets: the Dockerfile, .dockerignore, every file of the build context, the build
arguments and the base images), so a second run reuses it and any change rebuilds it.
`KubeNode.import_image` loads one into the node's containerd.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON_IMAGE = "godrun.test/python:bookworm"
PYTHON_VENV = "/opt/python"  # the local Python base's pip and python come first on PATH, as in python:*-slim
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "godrun", "scripts", "requirements")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited with {res.returncode}:\n{res.stderr.strip()[-3000:]}")
    return res


def images_dir(cache: Path) -> Path:
    folder = cache / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def docker_archive(path: Path, tag: str, layer: Path, config: dict, made_by: str) -> None:
    """Write a one-layer image (`layer`: a tarball of its root file system) as a docker-archive tarball."""
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha256_file(layer)}"]},
        "history": [{"created_by": made_by}],  # buildah wants one entry per layer
    }
    manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}]
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, mode="w") as tar:
        for name, data in (("config.json", image_config), ("manifest.json", manifest)):
            raw = json.dumps(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        tar.add(layer, arcname="layer.tar")
    tmp.replace(path)


@dataclass(frozen=True)
class Built:
    """An image tarball and how it came to be: `seconds` is 0.0 when it was reused from the cache."""

    archive: Path
    tag: str
    seconds: float

    @property
    def size_mib(self) -> float:
        return self.archive.stat().st_size / 2**20


def _cached(out: Path, tag: str, make) -> Built:
    if out.exists():
        return Built(out, tag, 0.0)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=".work-"))
    try:
        make(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kind = out.name.rsplit("-", 1)[0]
    for stale in out.parent.glob(f"{kind}-*.tar"):  # earlier builds of the same image
        if stale != out:
            stale.unlink(missing_ok=True)
    return Built(out, tag, time.monotonic() - t0)


def pause_image(cache: Path, tag: str) -> Built:
    """The pod sandbox image, from the pause.c of the pinned kubernetes module."""
    source = next((cache / "go-mod" / "k8s.io").glob("kubernetes@*/build/pause/linux/pause.c"), None)
    if source is None:
        raise FileNotFoundError(f"pause.c not in {cache / 'go-mod'} (run make node-bin)")
    key = hashlib.sha256(source.read_bytes() + tag.encode()).hexdigest()[:16]
    out = images_dir(cache) / f"pause-{key}.tar"

    def make(work: Path) -> None:
        version = tag.rsplit(":", 1)[1]
        _run("gcc", "-Os", "-Wall", "-static", f"-DVERSION=v{version}", "-o", str(work / "pause"), str(source))
        with tarfile.open(work / "layer.tar", "w") as tar:
            tar.add(work / "pause", arcname="pause")
        config = {"Entrypoint": ["/pause"], "User": "65535:65535"}
        docker_archive(out, tag, work / "layer.tar", config, f"gcc -static {source.name}")

    return _cached(out, tag, make)


def _debootstrap(cache: Path, name: str, tag: str, packages: Iterable[str], hooks: Iterable[str], env: list[str]):
    args = ["--variant=minbase", "--mode=root", "--quiet", f"--include={','.join(packages)}"]
    args += [f"--customize-hook={hook}" for hook in hooks]
    key = hashlib.sha256(json.dumps([args, env, tag]).encode()).hexdigest()[:16]
    out = images_dir(cache) / f"{name}-{key}.tar"

    def make(work: Path) -> None:
        _run("mmdebstrap", *args, "bookworm", str(work / "layer.tar"))
        docker_archive(out, tag, work / "layer.tar", {"Cmd": ["/bin/bash"], "Env": env}, "mmdebstrap " + " ".join(args))

    return _cached(out, tag, make)


def python_image(cache: Path) -> Built:
    """Stands in for python:*-slim-bookworm: Debian's Python in a virtualenv whose pip comes first on PATH.

    It trusts what this machine trusts (its CA bundle, pip pointed at it by PIP_CERT), so that `pip install` in
    the Dockerfile reaches PyPI through whatever TLS proxy this machine's own pip goes through."""
    hooks = [
        f'chroot "$1" python3 -m venv {PYTHON_VENV}',
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
        f"copy-in {HOST_CA_BUNDLE} /etc/ssl/certs",
    ]
    env = [
        f"PATH={PYTHON_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
        f"PIP_CERT={HOST_CA_BUNDLE}",
    ]
    return _debootstrap(cache, "python", PYTHON_IMAGE, ["python3", "python3-venv", "ca-certificates"], hooks, env)


def _context_files() -> list[Path]:
    files: list[Path] = []
    for name in CONTEXT:
        path = ROOT / name
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        else:
            files.append(path)
    return files


class Buildah:
    """buildah with its own overlay storage under the image cache (no daemon). vfs, which copies the whole file
    system for every layer, took ~5 GB for the controller alone and would take tens of GB for the trainer."""

    def __init__(self, cache: Path) -> None:
        top = images_dir(cache) / "buildah-overlay"
        self.flags = ["--root", str(top / "root"), "--runroot", str(top / "run"), "--storage-driver", "overlay"]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run("buildah", *self.flags, *args)

    def load(self, image: Built) -> None:
        self("pull", "--quiet", f"docker-archive:{image.archive}")
        self("tag", _loaded_name(image), image.tag)

    def build(self, target: str, tag: str, build_args: dict[str, str], out: Path) -> None:
        argv = ["bud", "--pull=never", "--layers", "--isolation", "chroot", "--target", target, "-t", tag]
        for name, value in build_args.items():
            argv += ["--build-arg", f"{name}={value}"]
        self(*argv, "-f", str(ROOT / "Dockerfile"), str(ROOT))
        tmp = out.with_name(out.name + ".tmp")
        tmp.unlink(missing_ok=True)
        self("push", "--quiet", tag, f"docker-archive:{tmp}:{tag}")
        tmp.replace(out)


def _loaded_name(image: Built) -> str:
    """The name `buildah pull docker-archive:` gives an image: the tag written in the archive."""
    return json.loads(tarfile.open(image.archive).extractfile("manifest.json").read())[0]["RepoTags"][0]


def dockerfile_image(cache: Path, target: str, tag: str, bases: dict[str, Built]) -> Built:
    """`target` of the repository's Dockerfile, built with the local `bases` (build argument -> image)."""
    digest = hashlib.sha256(json.dumps([target, tag, {k: v.archive.name for k, v in bases.items()}]).encode())
    for path in _context_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    out = images_dir(cache) / f"{target}-{digest.hexdigest()[:16]}.tar"

    def make(work: Path) -> None:
        buildah = Buildah(cache)
        for base in bases.values():
            buildah.load(base)
        buildah.build(target, tag, {name: base.tag for name, base in bases.items()}, out)

    return _cached(out, tag, make)
