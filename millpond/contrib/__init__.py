"""smallpond's ``smallpond.contrib`` path: its modules re-export :mod:`millpond.compat.contrib`'s
(``copy_table``, ``log_dataset``, ``warc``)."""
