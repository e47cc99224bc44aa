"""Build the Cython hot paths in csrc/ as fastgw._c.<name>.

Each extension is optional: if Cython or a compiler is missing, or FASTGW_PURE=1 is
set at build time, the package installs without it and the pure-Python twins run
(see fastgw/_speedups.py).
"""

import os
from glob import glob

from setuptools import setup

ext_modules = []
LIBRARIES = {"modsec": ["modsecurity"]}
"""C libraries an extension links against (Debian: libmodsecurity-dev for modsec)."""

if os.environ.get("FASTGW_PURE") != "1":
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:  # pragma: no cover - build without Cython gives the pure build
        cythonize = None
    if cythonize is not None:
        extensions = [
            Extension(
                f"fastgw._c.{os.path.splitext(os.path.basename(path))[0]}",
                [path],
                extra_compile_args=["-O3"],
                libraries=LIBRARIES.get(os.path.splitext(os.path.basename(path))[0], []),
                optional=True,
            )
            for path in sorted(glob("csrc/*.pyx"))
        ]
        ext_modules = cythonize(
            extensions,
            language_level=3,
            include_path=["csrc"],  # .pxd files shared by several extensions
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        )

setup(ext_modules=ext_modules)
