"""pystream as a package: the requirement lists agree with the lock, the wheel carries what an
installed pystream needs, and `pip install` of that wheel into a fresh venv gives working
`pystream` and `pystreamd` commands (index + search with the shipped model, no repo on the path).

The wheel is built like `make wheel` (pip wheel --no-build-isolation, in the source tree, so the
CMake tree build/cmake-<python tag> of `make build` is reused: only a relink when the C++ sources
did not change). The scratch venv does not download anything: it sees this venv's site-packages
(torch and the locked dependencies) through a .pth file and installs the wheel with --no-index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from test_pipeline_fixtures import REPO, write_video

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    tomllib = None

LOCK = REPO / "requirements.lock"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path, stop_at: str | None = None) -> list[Requirement]:
    """Requirement lines of a requirements file, up to the comment line `stop_at`."""
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if stop_at is not None and s == stop_at:
            break
        if s and not s.startswith(("#", "-")):
            out.append(Requirement(s.split(" #")[0]))
    return out


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: not an exact pin: {line!r}"
            pins[_norm(Requirement(name).name)] = version.strip()
    return pins


def _pyproject_dependencies() -> list[Requirement]:
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    return [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())
            ["project"]["dependencies"]]


# ----------------------------------------------------------------------------- requirement lists

def test_pyproject_dependencies_match_requirements_txt():
    runtime = {_norm(r.name): r for r in _requirements(REPO / "requirements.txt", "# build")}
    deps = {_norm(r.name): r for r in _pyproject_dependencies()}
    # torch is a dependency of the package, but the Makefile installs it first and on its own.
    assert "torch" in deps and "torch" not in runtime
    assert deps.pop("torch").specifier.contains("2.13.0+cpu")
    assert set(deps) == set(runtime), "pyproject.toml dependencies != requirements.txt runtime part"
    for name, r in deps.items():
        assert r.specifier == runtime[name].specifier, name


def test_lock_pins_everything_requirements_txt_asks_for():
    pins = _lock_pins()
    for r in _requirements(REPO / "requirements.txt"):
        name = _norm(r.name)
        assert name in pins, f"{r.name} is in requirements.txt but not in requirements.lock: make lock"
        assert r.specifier.contains(pins[name], prereleases=True), (r, pins[name])
    # torch is installed first and pinned on its own (Makefile TORCH); no CUDA wheels ever.
    assert "torch" not in pins and "pip" not in pins
    assert not [n for n in pins if n.startswith("nvidia-")]
    # torch's own dependencies are pinned too (the lock is resolved together with torch).
    for name in ("sympy", "networkx", "filelock", "jinja2"):
        assert name in pins, name


def test_makefile_installs_from_the_lock():
    mk = (REPO / "Makefile").read_text()
    assert re.search(r"^\$\(DEPS\): \$\(LOCK\)", mk, re.M)
    assert "install --no-deps -r $(LOCK)" in mk and "pip check" in mk
    assert "\nlock:" in mk and "piptools compile" in mk


# ----------------------------------------------------------------------------- the wheel

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools stages the package in build/lib.*: a module deleted since the last build would
    # otherwise still ship. The CMake tree (build/cmake-*) is kept, so the core is not recompiled.
    for stale in list((REPO / "build").glob("lib*")) + list((REPO / "build").glob("bdist*")):
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                        "--disable-pip-version-check", "-w", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    print(f"wheel built in {time.monotonic() - t0:.0f} s")
    wheels = list(out.glob("pystream-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _source_files(sub: str, pattern: str = "*") -> set[str]:
    root = REPO / "pystream"
    return {f"pystream/{p.relative_to(root).as_posix()}" for p in (root / sub).rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_wheel_contents(wheel):
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    pkg = {n for n in names if n.startswith("pystream/")}
    dist_info = {n for n in names if ".dist-info/" in n}
    assert names == pkg | dist_info, sorted(names - pkg - dist_info)  # no tests/, csrc/, ...

    # Every module of the source tree and nothing else (no stale modules).
    assert {n for n in pkg if n.endswith(".py")} == _source_files("", "*.py")
    # The built core, the shipped model, the default config, web assets if there are any.
    cores = [n for n in pkg if re.fullmatch(r"pystream/_core\..*\.so", n)]
    assert len(cores) == 1, cores
    model = _source_files("assets/tiny-clip")
    assert {"pystream/assets/tiny-clip/config.json",
            "pystream/assets/tiny-clip/model.safetensors"} <= model <= pkg
    for n in sorted(model):
        assert z.read(n) == (REPO / n).read_bytes(), n
    assert z.read("pystream/_data/default.yaml") == (REPO / "config/default.yaml").read_bytes()
    for web in ("web", "static"):
        assert {n for n in _source_files(web) if not n.endswith((".py", ".pyc"))} <= pkg

    meta = next(n for n in dist_info if n.endswith("/METADATA"))
    requires = {_norm(Requirement(line.split(":", 1)[1].strip()).name): line
                for line in z.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}  # not extras
    assert set(requires) == {_norm(r.name) for r in _pyproject_dependencies()}
    assert "torch>=2.1" in requires["torch"]
    ep = z.read(next(n for n in dist_info if n.endswith("/entry_points.txt"))).decode()
    assert "pystream = pystream.cli:main" in ep and "pystreamd = pystream.cli:daemon_main" in ep


_CHECK = r"""
import json, sys
from importlib.metadata import distribution, version
from pathlib import Path
from packaging.requirements import Requirement
import pystream, pystream._core
from pystream.config import DEFAULT_CONFIG, load_config
from pystream.model.loader import shipped_model_dir
d = distribution("pystream")
unmet = []
for r in map(Requirement, d.requires or []):
    if r.marker is None or r.marker.evaluate({"extra": ""}):
        try:
            v = version(r.name)
        except Exception:
            v = None
        if v is None or not r.specifier.contains(v, prereleases=True):
            unmet.append(f"{r} (installed: {v})")
load_config(None)
print(json.dumps({"pystream": pystream.__file__, "dist": str(d.locate_file("")),
                  "core": pystream._core.__file__, "config": str(DEFAULT_CONFIG),
                  "model": str(shipped_model_dir()), "unmet": unmet}))
"""


@pytest.mark.slow
def test_wheel_installs_and_runs(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    # torch, the other dependencies and pip come from this venv (read-only, after the scratch
    # venv's own site-packages; its .pth files, e.g. an editable pystream, are not processed).
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_pystream_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    t0 = time.monotonic()
    # --force-reinstall: this venv's own (editable) pystream 0.1.0 is visible through the .pth;
    # --no-deps + the check below: every Requires-Dist must already be met, nothing downloaded.
    p = subprocess.run([str(py), "-m", "pip", "install", "--no-index", "--no-deps",
                        "--force-reinstall", str(wheel)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"installed in {time.monotonic() - t0:.0f} s")

    def run(*args, timeout=300):
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    rc, out, err = run(py, "-c", _CHECK)
    assert rc == 0, err
    info = json.loads(out)
    inside = str(site)
    for key in ("pystream", "dist", "core", "config", "model"):
        assert info[key].startswith(inside), (key, info[key])  # the installed copy, not the repo
    assert info["unmet"] == [], info["unmet"]
    assert Path(info["config"]).name == "default.yaml"
    assert (Path(info["model"]) / "model.safetensors").is_file()

    for script in ("pystream", "pystreamd"):
        exe = venv / "bin" / script
        assert exe.read_text().startswith(f"#!{py}"), exe.read_text()[:200]
        rc, out, err = run(exe, "--help")
        assert rc == 0 and "usage:" in out, err

    write_video(tmp_path / "clip.mp4", 48, seed=1)
    t1 = time.monotonic()
    rc, out, err = run(venv / "bin" / "pystream", "index", tmp_path / "clip.mp4", "--archive",
                       tmp_path / "arc", "--source", "pkg", "-q")
    assert rc == 0, out + err
    assert "indexed 1 file(s)" in out, out
    rc, out, err = run(venv / "bin" / "pystream", "search", "a red circle", "--archive",
                       tmp_path / "arc", "-k", "3", "--json")
    assert rc == 0, err
    hits = json.loads(out)
    assert hits and all(h["source"] == "pkg" and h["end"] > h["start"] for h in hits), hits
    print(f"index + search in {time.monotonic() - t1:.0f} s")
