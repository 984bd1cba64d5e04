"""The package's PEP 517 build backend, in-tree and standard-library only, so that
`python3 -m pip install .` works offline: it builds the extension with the project's own CMake
(nanovllm._core, into <build dir>/python/nanovllm) and packs that folder into a wheel.

The build directory is $NANOVLLM_BUILD_DIR, else the repository's build/ (the README's test
command builds there, so an install after it only links the extension). Config settings:
`--config-settings build-dir=DIR`.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, VERSION = "nanovllm", "0.1.0"
METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: nano-vLLM's Python API over nanovllm's C++/CUDA inference engine
Requires-Python: >=3.10
"""


def _build_dir(config_settings):
    d = (config_settings or {}).get("build-dir") or os.environ.get("NANOVLLM_BUILD_DIR") or os.path.join(ROOT, "build")
    return os.path.abspath(d)


def _tag():
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{py}-{py}{sys.abiflags}-{plat}"


def _cached_python(build):
    """The Python the build directory is configured with, if it still runs and builds extensions
    for this interpreter's ABI: then the build directory is left as it is."""
    cached = None
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:  # FindPython keeps its pick in _Python_EXECUTABLE unless one was given
                key, _, value = line.partition("=")
                if key.split(":")[0] in ("Python_EXECUTABLE", "_Python_EXECUTABLE") and value.strip():
                    cached = value.strip()
        if not cached:
            return None
        suffix = subprocess.run([cached, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                                check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return cached if suffix == sysconfig.get_config_var("EXT_SUFFIX") else None


def _cmake(build):
    jobs = str(os.cpu_count() or 2)
    # Never a virtual environment's interpreter (it may be a temporary one): its base has the same ABI.
    python = _cached_python(build) or getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                    f"-DPython_EXECUTABLE={python}"], check=True, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", build, "--target", "_core", "-j", jobs], check=True, stdout=sys.stderr)


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    build = _build_dir(config_settings)
    _cmake(build)
    pkg = os.path.join(build, "python", NAME)
    tag = _tag()
    name = f"{NAME}-{VERSION}-{tag}.whl"
    dist_info = f"{NAME}-{VERSION}.dist-info"
    records = []

    def add(zf, arcname, data):
        zf.writestr(arcname, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{arcname},sha256={digest},{len(data)}")

    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(os.listdir(pkg)):
            if f.endswith((".py", ".pyi", ".so")) or f == "py.typed":
                with open(os.path.join(pkg, f), "rb") as fh:
                    add(zf, f"{NAME}/{f}", fh.read())
        add(zf, f"{dist_info}/METADATA", METADATA.encode())
        add(zf, f"{dist_info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: nanovllm build_backend\nRoot-Is-Purelib: false\nTag: {tag}\n".encode())
        add(zf, f"{dist_info}/top_level.txt", f"{NAME}\n".encode())
        records.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    files = subprocess.run(["git", "-C", ROOT, "ls-files"], check=True, capture_output=True, text=True).stdout.split()
    name = f"{NAME}-{VERSION}"
    with tarfile.open(os.path.join(sdist_directory, f"{name}.tar.gz"), "w:gz") as tf:
        for f in files:
            tf.add(os.path.join(ROOT, f), arcname=f"{name}/{f}")
    return f"{name}.tar.gz"
