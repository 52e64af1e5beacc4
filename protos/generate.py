"""Generate the Python code for protos/vimark/v1/*.proto (messages, .pyi stubs, gRPC stubs).

    python protos/generate.py          # write the generated files beside the .proto files
    python protos/generate.py --check  # exit 1 if the committed files are stale

The output depends on the grpcio-tools version, which pyproject.toml pins for that reason.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
PACKAGE = PROTOS / "vimark" / "v1"


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PACKAGE.glob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}"]
    args += [f"--grpc_python_out={out}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_names(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*_pb2*.py*")}


def main() -> int:
    if "--check" not in sys.argv[1:]:
        generate(PROTOS)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "vimark" / "v1"
        names = generated_names(fresh) | generated_names(PACKAGE)
        stale = sorted(
            n
            for n in names
            if not (PACKAGE / n).exists()
            or not (fresh / n).exists()
            or not filecmp.cmp(PACKAGE / n, fresh / n, shallow=False)
        )
    if stale:
        print("generated code is stale against protos/: run `python protos/generate.py`:", *stale)
        return 1
    print("generated code is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
