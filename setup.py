"""Build of pystream and its C++/CUDA core ``pystream._core`` (CMake driven by build_ext).

    pip install --no-build-isolation --no-deps -e .     # what `make build` runs
    pip install .                                       # isolated build (see pyproject.toml)

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


setup(
    name="pystream",
    version=VERSION,
    description="Streaming video indexing with temporal token merging",
    packages=find_packages(include=["pystream", "pystream.*"]),
    python_requires=">=3.9",
    ext_modules=[CMakeExtension("pystream._core", sourcedir=str(ROOT))],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
