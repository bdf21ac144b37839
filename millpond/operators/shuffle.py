"""Bucketing for exchanges: which output partition each row goes to."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from millpond.io.sqltext import ident_list, quote_ident, quote_string
from millpond.operators.base import Step
from millpond.operators.sql import bind

BUCKET_COLUMN = "__mp_bucket"


def smallpond_hash_key(exprs: list[str], n: int) -> str:
    """The partition number smallpond gives a row when hash-partitioning by ``exprs`` (SQL
    pasted as is): ``HashPartitionDuckDbTask.partition_query`` in smallpond/execution/task.py.
    Written the same way so that every row lands where smallpond puts it (on the same DuckDB:
    its string hash changed in 1.3)."""
    return f"CAST(hash( concat_ws( '##', {', '.join(exprs)} ) ) AS UINT64) % {n}::UINT64"


def smallpond_random_key(n: int) -> str:
    """smallpond's ``random_shuffle`` partition number (``HashPartitionDuckDbTask``): the
    same distribution, though no two runs agree."""
    return f"CAST(random() * {2147483647 // n * n} AS UINT64) % {n}::UINT64"


@dataclass
class HashBucketing:
    """Rows with equal keys land in the same bucket (group-by, join, distinct, hash repartition).
    ``smallpond``: bucket by :func:`smallpond_hash_key` (``repartition(hash_by=)``), so the
    placement is smallpond's; else DuckDB's native ``hash`` of the typed keys (internal
    exchanges, where only co-location matters and concatenating strings is wasted work)."""

    keys: list[str]
    n: int
    smallpond: bool = False

    def describe(self) -> str:
        return f"hash({', '.join(self.keys)}) into {self.n}"

    def bucketed(self, ctx, rel: str, step: Step) -> str:
        if self.smallpond and self.keys:
            # a key naming a column is quoted; anything else is SQL, as smallpond pastes it
            names = set(ctx.columns(rel))
            exprs = [quote_ident(k) if k in names else k for k in self.keys]
            key = smallpond_hash_key(exprs, self.n)
            return bind(ctx, f"SELECT *, ({key})::BIGINT AS {BUCKET_COLUMN} FROM ({rel})", [step])
        keys = self.keys or ctx.columns(rel)
        sql = f"SELECT *, (hash({ident_list(keys)}) % {self.n})::BIGINT AS {BUCKET_COLUMN} FROM ({rel})"
        return bind(ctx, sql, [step])


@dataclass
class ExprBucketing:
    """A user SQL expression gives the partition number; out-of-range values are an error."""

    expr: str
    n: int

    def describe(self) -> str:
        return f"by {self.expr!r} into {self.n}"

    def bucketed(self, ctx, rel: str, step: Step) -> str:
        # smallpond's words: "partition key 10 is out of range 0-9"
        suffix = quote_string(f" is out of range 0-{self.n - 1} (repartition by {self.expr})")
        value = f"({self.expr})"
        sql = (
            f"SELECT *, CASE WHEN {value} >= 0 AND {value} < {self.n} THEN {value}::BIGINT "
            f"ELSE error('partition key ' || coalesce(CAST({value} AS VARCHAR), 'NULL') || {suffix}) "
            f"END AS {BUCKET_COLUMN} FROM ({rel})"
        )
        return bind(ctx, sql, [step])


@dataclass
class RandomBucketing:
    """Rows scattered uniformly; reproducible when a seed is given (one thread per task)."""

    seed: int | None
    n: int

    def describe(self) -> str:
        return f"random into {self.n}" + (f" (seed {self.seed})" if self.seed is not None else "")

    def bucketed(self, ctx, rel: str, step: Step) -> str:
        if self.seed is not None:
            # a hash of the row's values and the seed: the same buckets whatever the number of
            # threads or the order rows arrive in (random() after setseed is not reproducible)
            return (
                f"SELECT *, (hash(__mp_row, {int(self.seed)}) % {self.n})::BIGINT AS {BUCKET_COLUMN} "
                f"FROM ({rel}) AS __mp_row"
            )
        return f"SELECT *, floor(random() * {self.n})::BIGINT AS {BUCKET_COLUMN} FROM ({rel})"


@dataclass
class RangeBucketing:
    """Key ranges in sort order, from boundaries sampled at run time (total-order sort)."""

    key: str
    descending: bool
    n: int
    boundaries: pa.Table | None = None  # one column "b", n-1 values in sort order

    def describe(self) -> str:
        return f"range of {self.key}{' desc' if self.descending else ''} into {self.n}"

    def bucketed(self, ctx, rel: str, step: Step) -> str:
        if self.boundaries is None or self.boundaries.num_rows == 0:
            return f"SELECT *, 0::BIGINT AS {BUCKET_COLUMN} FROM ({rel})"
        bounds = ctx.register(self.boundaries)
        op = ">=" if self.descending else "<="
        key = f"t.{quote_ident(self.key)}"
        # bucket = how many boundaries sort at or before the key: a streaming expression over
        # a one-row list of boundaries (an ASOF join sorts the partition: OOM at small budgets)
        sql = (
            f"SELECT t.*, CASE WHEN {key} IS NULL THEN {self.n - 1} "
            f"ELSE len(list_filter(bd.bl, lambda __mp_b: __mp_b {op} {key})) END::BIGINT "
            f"AS {BUCKET_COLUMN} FROM ({rel}) AS t, "
            f"(SELECT list(b ORDER BY i) AS bl FROM {bounds}) AS bd"
        )
        return bind(ctx, sql, [step])


Bucketing = HashBucketing | ExprBucketing | RandomBucketing | RangeBucketing
