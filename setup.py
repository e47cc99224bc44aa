"""Build the Cython hot paths in csrc/ as fastgw._c.<name>.

Each extension is optional: if Cython or a compiler is missing, or FASTGW_PURE=1 is
set at build time, the package installs without it and the pure-Python twins run
(see fastgw/_speedups.py).
"""

import os
import sys
import sysconfig
from glob import glob

from setuptools import setup

ext_modules = []
LIBRARIES = {"compress": ["zstd", "brotlienc", "z"], "modsec": ["modsecurity"], "tlslayer": ["ssl", "crypto"]}
"""C libraries an extension links against (Debian: libmodsecurity-dev for modsec)."""
HEADERS = {"compress": {"zstd.h": "libzstd-dev", "brotli/encode.h": "libbrotli-dev", "zlib.h": "zlib1g-dev"},
           "modsec": {"modsecurity/modsecurity.h": "libmodsecurity-dev"},
           "tlslayer": {"openssl/ssl.h": "libssl-dev"}}
"""Headers an extension needs, with the Debian package that ships each (Makefile APT_PACKAGES)."""


def _missing_headers(name: str) -> list[str]:
    dirs = [sysconfig.get_config_var("INCLUDEDIR") or "/usr/include", "/usr/include", "/usr/local/include",
            *os.environ.get("CPATH", "").split(os.pathsep)]
    return [f"{header} ({package})" for header, package in HEADERS.get(name, {}).items()
            if not any(d and os.path.exists(os.path.join(d, header)) for d in dirs)]


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


if os.environ.get("FASTGW_PURE") != "1":
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:  # pragma: no cover - build without Cython gives the pure build
        cythonize = None
    if cythonize is not None:
        extensions = []
        for path in sorted(glob("csrc/*.pyx")):
            missing = _missing_headers(_name(path))
            if missing:  # said plainly: the pure twin will serve, and `make setup` checks the import
                sys.stderr.write(f"fastgw: not building {path}: missing {', '.join(missing)}\n")
                continue
            extensions.append(Extension(f"fastgw._c.{_name(path)}", [path], extra_compile_args=["-O3"],
                                        libraries=LIBRARIES.get(_name(path), []), optional=True))
        ext_modules = cythonize(
            extensions,
            language_level=3,
            include_path=["csrc"],  # .pxd files shared by several extensions
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        )

setup(ext_modules=ext_modules)
