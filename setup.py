"""Builds the Python package `sa2va`: the pure-Python files under python/ plus the extension module
sa2va._sa2va, compiled by this repository's CMake build.

    python3 -m venv --system-site-packages .venv
    .venv/bin/pip install --no-build-isolation .

The extension is built in $SA2VA_BUILD_DIR when set, else in build/ when the set-up script has
configured it (only the module is added there), else in build-python/.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def project_version() -> str:
    match = re.search(r"project\(sa2va_cpp VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text())
    if not match:
        raise RuntimeError("CMakeLists.txt: no project version found")
    return match.group(1)


def cmake_build_dir() -> Path:
    if os.environ.get("SA2VA_BUILD_DIR"):
        return Path(os.environ["SA2VA_BUILD_DIR"]).resolve()
    if (ROOT / "build" / "CMakeCache.txt").exists():
        return ROOT / "build"
    return ROOT / "build-python"


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = cmake_build_dir()
        if not (build_dir / "CMakeCache.txt").exists():
            subprocess.check_call([
                "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                "-DSA2VA_BUILD_TESTS=OFF", "-DSA2VA_BUILD_BENCH=OFF", "-DSA2VA_BUILD_PYTHON=ON",
                f"-DPython_EXECUTABLE={sys.executable}",
            ])
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "_sa2va", "-j", str(os.cpu_count() or 1)])
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = build_dir / "python" / "sa2va" / f"_sa2va{suffix}"
        if not built.exists():
            raise RuntimeError(f"{built} was not built: {build_dir} was configured for another Python or without "
                               "pybind11; set SA2VA_BUILD_DIR to a new folder")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(
    version=project_version(),
    packages=["sa2va", "sa2va.eval", "sa2va.data"],
    package_dir={"": "python"},
    package_data={"sa2va": ["py.typed", "*.pyi"]},
    ext_modules=[Extension("sa2va._sa2va", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": "build-python/setuptools"}},
    zip_safe=False,
)
