"""Input/output: filesystems (local, POSIX mounts, fsspec URLs), file formats, atomic commits."""
