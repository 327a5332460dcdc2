"""Builds the rnnkit._C extension.

The extension is a CUDAExtension when torch is a CUDA build and a CUDA toolkit of
the same major version is found (a GPU is not needed to compile), and a
CppExtension otherwise. RNNKIT_CUDA=0 forces the CPU-only build; RNNKIT_CUDA=1
forces the CUDA build and fails loudly when it cannot be done.

Install with `pip install --no-build-isolation .` so that the extension is
compiled against the torch that will load it.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from packaging.version import Version
from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(msg):
    print(f"rnnkit setup: {msg}", file=sys.stderr)


def _nvcc_release(nvcc):
    """The 'release X.Y' of an nvcc binary, or None."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return Version(m.group(1)) if m else None


def _is_toolkit(root):
    return bool(root) and os.path.isfile(os.path.join(root, "bin", "nvcc")) and os.path.isfile(
        os.path.join(root, "include", "cuda_runtime.h")
    )


def _toolkit_candidates():
    """Directories that may hold a CUDA toolkit, most explicit first."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            yield os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        yield os.path.dirname(os.path.dirname(real))
        # A wrapper script (e.g. /usr/local/bin/nvcc that execs the real one):
        # the toolkit is wherever the absolute nvcc path it names lives.
        try:
            with open(real, "rb") as f:
                head = f.read(4096)
            if not head.startswith(b"\x7fELF"):
                for path in re.findall(rb"(/[^\s'\"]+)/bin/nvcc", head):
                    yield path.decode()
        except OSError:
            pass
    yield "/usr/local/cuda"
    yield from sorted(glob.glob("/usr/local/cuda-*"), reverse=True)


def find_cuda_toolkit(torch_cuda):
    """The root of a CUDA toolkit whose major version matches torch's, or None."""
    want = Version(torch_cuda).major
    seen = set()
    for root in _toolkit_candidates():
        root = os.path.realpath(root)
        if root in seen or not _is_toolkit(root):
            continue
        seen.add(root)
        release = _nvcc_release(os.path.join(root, "bin", "nvcc"))
        if release is not None and release.major == want:
            return root
        _log(f"skipping CUDA toolkit {root}: release {release}, torch needs {want}.x")
    return None


def nvidia_wheel_includes():
    """Header directories of the nvidia-* wheels torch depends on (cuBLAS, cuSPARSE, ...).

    A bare toolkit may lack these libraries' headers; torch's own headers include them.
    """
    dirs = []
    for site in sys.path:
        base = os.path.join(site, "nvidia")
        if not os.path.isdir(base):
            continue
        dirs += glob.glob(os.path.join(base, "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "*", "include"))
    return sorted({d for d in dirs if os.path.isdir(d)})


def decide_cuda(torch):
    """(use_cuda, toolkit_root) following RNNKIT_CUDA and what this machine has."""
    forced = os.environ.get("RNNKIT_CUDA", "").strip()
    if forced not in ("", "0", "1"):
        raise SystemExit(f"RNNKIT_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False, None
    if not torch.version.cuda:
        if forced == "1":
            raise SystemExit("RNNKIT_CUDA=1 but this torch is not a CUDA build")
        return False, None
    root = find_cuda_toolkit(torch.version.cuda)
    if root is None:
        msg = f"no CUDA {Version(torch.version.cuda).major}.x toolkit found (torch is built with CUDA {torch.version.cuda})"
        if forced == "1":
            raise SystemExit(f"RNNKIT_CUDA=1 but {msg}")
        _log(msg + "; building the CPU-only extension")
        return False, None
    return True, root


def sources(use_cuda):
    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cu = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True)) if use_cuda else []
    return cpp + cu


def _aten_uses_openmp(torch):
    """Whether ATen's parallel backend is OpenMP (as in the Linux wheels)."""
    if sys.platform == "darwin":
        return False
    try:
        return "parallel backend: OpenMP" in torch.__config__.parallel_info()
    except Exception:  # an unusual torch build: keep the default flags
        return False


def build_extension():
    import torch

    use_cuda, toolkit = decide_cuda(torch)
    if use_cuda:
        # cpp_extension reads CUDA_HOME when it is imported, so set it first.
        os.environ["CUDA_HOME"] = toolkit
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # With no GPU to ask, cpp_extension cannot pick architectures itself.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    from torch.utils import cpp_extension

    debug = os.environ.get("RNNKIT_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # No -std flag: cpp_extension picks the standard the installed torch needs.
    cxx_flags = opt + ["-fdiagnostics-color=always"]
    sanitize = os.environ.get("RNNKIT_SANITIZE", "")
    link_flags = []
    if sanitize:
        # e.g. RNNKIT_SANITIZE=address,undefined: used by tools/sanitize.sh.
        cxx_flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
        link_flags += [f"-fsanitize={sanitize}"]
    if _aten_uses_openmp(torch):
        # at::parallel_for is inline code (ATen/ParallelOpenMP.h) that runs its
        # threads with `#pragma omp parallel`: without -fopenmp it compiles to a
        # serial loop in our files. The OpenMP runtime is torch's own libgomp.
        cxx_flags += ["-fopenmp"]
        link_flags += ["-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    kwargs = dict(
        name="rnnkit._C",
        sources=sources(use_cuda),
        include_dirs=include_dirs,
        extra_link_args=link_flags,
        py_limited_api=False,
    )
    if use_cuda:
        include_dirs += nvidia_wheel_includes()
        nvcc_flags = opt + ["--expt-relaxed-constexpr", "-lineinfo"]
        ext = cpp_extension.CUDAExtension(
            extra_compile_args={"cxx": cxx_flags + ["-DRNNKIT_WITH_CUDA"], "nvcc": nvcc_flags + ["-DRNNKIT_WITH_CUDA"]},
            **kwargs,
        )
        _log(f"CUDA build with toolkit {toolkit}, archs {os.environ.get('TORCH_CUDA_ARCH_LIST', 'auto')}")
    else:
        ext = cpp_extension.CppExtension(extra_compile_args={"cxx": cxx_flags}, **kwargs)
        _log("CPU-only build")
    build_ext = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = build_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
