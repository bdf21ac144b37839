"""The smallpond-style DataFrame API on the embedded engine: read Parquet, repartition,
transform with SQL, aggregate without a manual shuffle, write Parquet.

    python examples/quickstart.py [WORKDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import millpond


def make_input(directory: str, files: int = 4, rows: int = 50_000) -> str:
    """A few Parquet files of synthetic sales: (id, region, amount)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(7)
    regions = np.array(["north", "south", "east", "west"])
    for i in range(files):
        ids = np.arange(i * rows, (i + 1) * rows)
        table = pa.table(
            {
                "id": ids,
                "region": regions[rng.integers(0, 4, rows)],
                "amount": rng.gamma(2.0, 30.0, rows).round(2),
            }
        )
        pq.write_table(table, os.path.join(directory, f"sales-{i}.parquet"))
    return directory


def main(workdir: str) -> None:
    source = make_input(os.path.join(workdir, "sales"))
    with millpond.init(data_root=os.path.join(workdir, "millpond")) as sp:
        df = sp.read_parquet(os.path.join(source, "*.parquet"))
        df = df.repartition(8, hash_by="region")
        df = df.map("id, region, amount, amount * 1.2 AS amount_with_tax")
        df = df.filter("amount > 10")
        totals = df.groupby("region").agg("sum(amount_with_tax) AS revenue", "count(*) AS orders")
        print(totals.sort("region").to_pandas().to_string(index=False))
        out = os.path.join(workdir, "revenue")
        totals.write_parquet(out, mode="overwrite")
        print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="millpond-quickstart-"))
