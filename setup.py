"""Build the Cython ranker; OpenMP is used when the compiler supports it."""

import os
import shutil
import subprocess
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup


def _openmp_flags() -> list[str]:
    """Return the OpenMP flag if a test program compiles with it, else nothing."""
    if sys.platform == "win32" or os.environ.get("CLUSTERALIGN_NO_OPENMP"):
        return []
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        result = subprocess.run(
            [cc, "-fopenmp", src, "-o", os.path.join(tmp, "t")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return ["-fopenmp"] if result.returncode == 0 else []


omp = _openmp_flags()
extensions = [
    Extension(
        "clusteralign.eval._rank",
        ["clusteralign/eval/_rank.pyx"],
        extra_compile_args=["-O3", *omp],
        extra_link_args=omp,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )
)
