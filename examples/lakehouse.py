"""Training data in table formats, the way a continued-training run uses them: daily
appends, an incremental read of the new rows only, a clean-up written back as an upsert,
and a past version read again to reproduce an earlier run. Once with Lance, once with
Iceberg (a SQL catalog on sqlite and a local warehouse).

    python examples/lakehouse.py [WORKDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile

import millpond


def day_of_documents(day: int, n: int = 200) -> list[dict]:
    """A day's crawl: some documents are short or carry markup to clean up later."""
    return [
        {
            "doc_id": day * 1000 + i,
            "day": day,
            "text": f"<p>document {i} of day {day}</p>" if i % 5 == 0 else f"document {i}",
        }
        for i in range(n)
    ]


CLEAN_SQL = "SELECT doc_id, day, regexp_replace(text, '<[^>]+>', '', 'g') AS text FROM {0}"


def lance_lakehouse(sp: millpond.Session, workdir: str) -> None:
    uri = os.path.join(workdir, "corpus.lance")
    first = sp.from_items(day_of_documents(1)).write_lance(uri, mode="create")
    sp.from_items(day_of_documents(2)).write_lance(uri, mode="append")
    # continued training: only what arrived after the version the last run used
    new_rows = sp.read_lance(uri, since_version=first)
    print("lance: new rows since version", first, "=", new_rows.count())
    # clean the markup of the new rows and write them back in place (upsert on doc_id)
    cleaned = new_rows.partial_sql(CLEAN_SQL)
    latest = cleaned.write_lance(uri, mode="merge", on="doc_id")
    dirty = sp.read_lance(uri, filter="text LIKE '<p>%'").count()
    print(f"lance: version {latest}, {dirty} rows still with markup (day 1 was not cleaned)")
    # reproduce the first run: the table as it was at its first version
    print("lance: rows at version", first, "=", sp.read_lance(uri, version=first).count())


def iceberg_lakehouse(sp: millpond.Session, workdir: str) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = os.path.join(workdir, "warehouse")
    os.makedirs(warehouse, exist_ok=True)
    catalog = SqlCatalog(
        "lakehouse",
        uri=f"sqlite:///{os.path.join(workdir, 'catalog.db')}",
        warehouse=f"file://{warehouse}",
    )
    catalog.create_namespace("training")
    days = sp.from_items(day_of_documents(1))
    catalog.create_table("training.corpus", schema=days.to_arrow().schema)
    days.write_iceberg("training.corpus", catalog=catalog)
    first = catalog.load_table("training.corpus").current_snapshot().snapshot_id
    sp.from_items(day_of_documents(2)).write_iceberg("training.corpus", catalog=catalog)
    new_rows = sp.read_iceberg("training.corpus", catalog=catalog, since_snapshot=first)
    print("iceberg: new rows since snapshot", first, "=", new_rows.count())
    new_rows.partial_sql(CLEAN_SQL).write_iceberg(
        "training.corpus", catalog=catalog, mode="upsert", join_cols=["doc_id"]
    )
    rows = sp.read_iceberg("training.corpus", catalog=catalog)
    dirty = rows.filter("text LIKE '<p>%'").count()
    print(f"iceberg: {rows.count()} rows, {dirty} still with markup (day 1 was not cleaned)")
    past = sp.read_iceberg("training.corpus", catalog=catalog, snapshot_id=first).count()
    print("iceberg: rows at snapshot", first, "=", past)


def main(workdir: str) -> None:
    with millpond.init(data_root=os.path.join(workdir, "millpond"), progress=False) as sp:
        lance_lakehouse(sp, workdir)
        iceberg_lakehouse(sp, workdir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="millpond-lakehouse-"))
