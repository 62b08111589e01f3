"""Regenerates the committed gRPC code in scoring/api/ from protos/ (run by `make protos`)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from grpc_tools import protoc

PROTO_FILES = ("scoring/api/v1/scoring.proto",)


def generate(proto_root: Path, out_dir: Path) -> list[Path]:
    """Runs protoc for every API proto.

    Args:
        proto_root: the `protos/` folder; proto paths mirror import paths under it.
        out_dir: the source root that receives `scoring/api/v1/*_pb2*.py(i)`.

    Returns:
        The generated files.
    """
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    for proto in PROTO_FILES:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"-I{well_known}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(proto_root / proto),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc})")
    return sorted(p for p in (out_dir / "scoring" / "api").rglob("*_pb2*.py*"))


def main() -> None:
    root = Path(__file__).resolve().parents[3]
    for path in generate(root / "protos", root / "services"):
        print(path.relative_to(root))  # noqa: T201


if __name__ == "__main__":
    main()
