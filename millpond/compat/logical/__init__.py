"""smallpond's low-level API (``smallpond.logical``): datasets and nodes that compile to
millpond's own logical plan, so both APIs share one planner and one engine."""
