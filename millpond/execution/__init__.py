"""Execution: run the physical plan's tasks, embedded (worker processes) or on Ray."""
