"""Operators: what one task does to its partition — SQL in DuckDB, Python over Arrow, and the
sinks that write the result. Everything here runs inside a worker (or inline in the driver)."""
