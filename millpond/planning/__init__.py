"""Planning: the logical plan a DataFrame builds, the optimizer that rewrites it, and the
physical plan of stages and tasks an engine runs."""
