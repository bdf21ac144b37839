"""smallpond's ``smallpond.logical`` path: re-exports :mod:`millpond.compat.logical`."""
