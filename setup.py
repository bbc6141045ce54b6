"""Build of pystream and its C++/CUDA core ``pystream._core`` (CMake driven by build_ext).

    pip install --no-build-isolation --no-deps -e .     # what `make build` runs
    pip install .                                       # isolated build (see pyproject.toml)
    pip wheel --no-build-isolation --no-deps -w dist .  # a wheel (tests/test_package.py)

Install torch first (README "Install"): the `torch>=2.1` requirement in pyproject.toml is then
already satisfied; left to pip on a fresh venv it would pull gigabytes of CUDA wheels.
Metadata and dependencies live in pyproject.toml; the wheel carries the shipped model
(pystream/assets/tiny-clip), a copy of config/default.yaml (pystream/_data/default.yaml, found by
pystream.config) and web assets under pystream/web or pystream/static when there are any.

Environment: PYSTREAM_CUDA=auto|on|off (default auto), PYSTREAM_CUDA_ARCHS="75;80;90",
PYSTREAM_NATIVE=1|0 (-march=native, default 1), CMAKE_BUILD_PARALLEL_LEVEL (default 2).
The CMake build tree lives in build/cmake-<python tag> so rebuilds are incremental.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()
VERSION = "0.1.0"


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        cuda = os.environ.get("PYSTREAM_CUDA", "auto").strip().lower()
        if cuda not in ("auto", "on", "off"):
            raise SystemExit(f"PYSTREAM_CUDA must be auto, on or off, got {cuda!r}")
        native = os.environ.get("PYSTREAM_NATIVE", "1").strip().lower() not in ("0", "off", "no")
        build_temp = Path(ext.sourcedir) / "build" / f"cmake-{sys.implementation.cache_tag}"
        build_temp.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPYSTREAM_CUDA={cuda}",
            f"-DPYSTREAM_VERSION={VERSION}",
            f"-DPYSTREAM_NATIVE={'ON' if native else 'OFF'}",
        ]
        archs = os.environ.get("PYSTREAM_CUDA_ARCHS")
        if archs:
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(["cmake", "-S", ext.sourcedir, "-B", str(build_temp), *args], check=True)
        subprocess.run(["cmake", "--build", str(build_temp), "-j", jobs], check=True)


class BuildPy(build_py):
    """Also copies config/default.yaml (outside the package) to pystream/_data/default.yaml, so an
    installed pystream finds its default config. Editable installs read config/ directly."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "pystream" / "_data"
        dest.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(ROOT / "config" / "default.yaml"), str(dest / "default.yaml"))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / "pystream" / "_data" / "default.yaml"))
        return outputs


setup(
    name="pystream",
    version=VERSION,
    description="Streaming video indexing with temporal token merging",
    packages=find_packages(include=["pystream", "pystream.*"]),
    python_requires=">=3.9",
    # Data files inside the package. Folders without __init__.py are not packages, so their
    # files are listed here from the top package (setuptools takes ** since v62.3).
    package_data={"pystream": ["assets/tiny-clip/*", "assets/tiny-clip/adapter/*", "web/**/*",
                              "static/**/*"]},
    ext_modules=[CMakeExtension("pystream._core", sourcedir=str(ROOT))],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPy},
    zip_safe=False,
)
