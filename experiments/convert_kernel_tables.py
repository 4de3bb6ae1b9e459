"""Convert aiconfigurator's vLLM kernel tables (Parquet) into the compact .npz files simcost ships.

Run once, with pyarrow installed (`pip install 'simcost[parquet]'`):

    python experiments/convert_kernel_tables.py SOURCE_DIR [OUT_DIR]

SOURCE_DIR holds one folder per GPU (a100_sxm, h100_sxm, ...) as in aiconfigurator's
`aic-core/src/aiconfigurator_core/systems/data/` (commit 095f58a51c4c). Each GPU becomes
OUT_DIR/<gpu>.npz (default simcost/data/kernels) of float32 arrays, one per operator and dtype.
The conversion (what is kept and dropped, the columns) is simcost.perf.kernel_import.convert,
the same code that reads a catalog device's own `kernel_tables:` folder; a user's folder
converted here gives the .npz that loads without pyarrow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from simcost.perf.kernel_import import convert

OUT = Path(__file__).resolve().parents[1] / "simcost" / "data" / "kernels"


def main() -> None:
    source = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else OUT
    out.mkdir(parents=True, exist_ok=True)
    for gpu_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        arrays = convert(gpu_dir)
        np.savez_compressed(out / f"{gpu_dir.name}.npz", **arrays)
        print(gpu_dir.name, {k: v.shape[0] for k, v in arrays.items()})


if __name__ == "__main__":
    main()
