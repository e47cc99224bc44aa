"""The long, coverage-guided fuzz run (atheris / libFuzzer) over tests/fuzz/oracle.py.

Coverage comes from the pure twin (instrumented); the compiled twin runs on every input
too and must agree. Seeds are the raw corpus. See tests/fuzz/README.md for the command.
"""

from __future__ import annotations

import codecs
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["fastgw.http"]):
    from tests.fuzz import oracle


def one_input(buf: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(buf)
    cuts = [fdp.ConsumeIntInRange(0, 2048) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    oracle.check(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts)


def seed_dir() -> str:
    out = Path(tempfile.mkdtemp(prefix="fastgw-fuzz-seeds-"))
    for i, path in enumerate(sorted((ROOT / "tests" / "corpus" / "http").glob("*/*.http"))):
        raw = codecs.escape_decode(path.read_text().rstrip("\n").encode())[0]
        (out / f"seed-{i}").write_bytes(b"\x00" + raw)  # first byte: no cuts
    return str(out)


if __name__ == "__main__":
    args = sys.argv + ([seed_dir()] if not any(not a.startswith("-") for a in sys.argv[1:]) else [])
    atheris.Setup(args, one_input)
    atheris.Fuzz()
