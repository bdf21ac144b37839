"""Writes of a DataFrame into an Iceberg table (``df.write_iceberg``): the job's tasks write the
table's data files in parallel and return what they wrote; the driver commits it all at
once, only after the whole job has succeeded, so a failed job commits nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from millpond.errors import PlanError
from millpond.io import iceberg_table as iceberg
from millpond.operators.data import TablePartition
from millpond.operators.iceberg_sink import IcebergSink

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame


def write_iceberg(
    df: DataFrame,
    table: Any,
    catalog: Any = None,
    mode: str = "append",
    join_cols: Sequence[str] | None = None,
    overwrite_filter: Any = None,
    schema_mode: str | None = None,
) -> Any:
    """:meth:`DataFrame.write_iceberg`; returns the table as committed."""
    iceberg.import_pyiceberg()
    if mode not in iceberg.WRITE_MODES:
        raise PlanError(f"write_iceberg: mode must be one of {iceberg.WRITE_MODES}, got {mode!r}")
    if schema_mode not in iceberg.SCHEMA_MODES:
        raise PlanError(f"write_iceberg: schema_mode must be None or 'merge', got {schema_mode!r}")
    if overwrite_filter is not None and mode != "overwrite":
        raise PlanError("write_iceberg: overwrite_filter goes with mode='overwrite'")
    if join_cols is not None and mode != "upsert":
        raise PlanError("write_iceberg: join_cols goes with mode='upsert'")
    if mode == "upsert" and schema_mode == "merge":
        raise PlanError(
            "write_iceberg: mode='upsert' does not take schema_mode='merge' (pyiceberg's upsert "
            "cannot add columns in its transaction); add them first, e.g. by an append with "
            "schema_mode='merge'"
        )
    catalog = iceberg.load_catalog(catalog)
    tbl = iceberg.load_table(catalog, table)
    if mode == "upsert":
        return _upsert(df, catalog, tbl, join_cols)
    merge = None
    if schema_mode == "merge":  # the new columns, added while planning (not committed)
        merge = iceberg.required_schema(tbl.metadata, df.limit(0).to_arrow().schema)
    metadata = iceberg.merged_metadata(tbl, merge)
    iceberg.check_partition_transforms(metadata)
    writer = iceberg.DataFileWriter(metadata, dict(tbl.io.properties))
    (results,) = df.session.execute(
        [df._node],
        [lambda index, inline: IcebergSink(writer, index)],
        f"write_iceberg({iceberg.table_name(tbl)!r}, mode={mode!r})",
    )
    files = []
    for result in results:
        part = result.output.partition
        if not isinstance(part, TablePartition):  # every IcebergSink output is one
            raise RuntimeError(f"write_iceberg: task {result.index} returned no data file list")
        files += iceberg.decode_data_files(part.table)
    if mode == "append" and not files and merge is None:
        return tbl.refresh()  # nothing to add: no empty snapshot
    try:
        return iceberg.commit_data_files(
            catalog, tbl, files, mode, metadata, merge, overwrite_filter
        )
    except PlanError:  # refused, so surely not committed: the files are nobody's
        iceberg.remove_files(writer.io_properties, metadata.location, files)
        raise


def _upsert(df: DataFrame, catalog: Any, tbl: Any, join_cols: Sequence[str] | None) -> Any:
    """An upsert: the job's result collected, merged by pyiceberg's ``Table.upsert`` (it
    reads the rows the keys match, so the result must fit the driver's memory) into the
    table as the job planned it; refused, with nothing committed, when another writer
    committed since (the rows were matched against a state that is gone)."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    rows = df.to_arrow()
    name = iceberg.table_name(tbl)
    try:
        rows = iceberg.fit_table(tbl.metadata, rows)
        iceberg.without_commit_retries(tbl).upsert(
            rows, join_cols=list(join_cols) if join_cols else None
        )
    except (CommitFailedException, ValidationException) as exc:
        raise PlanError(
            f"write_iceberg({name!r}, mode='upsert'): another writer committed to the table "
            f"while this job ran ({exc}); nothing was committed"
        ) from exc
    return iceberg.load_table(catalog, name)
