"""``partial_sql`` over two inputs, smallpond style: hash both inputs by the join key into
the same number of partitions, then run one DuckDB query per partition pair.

    python examples/partial_sql_join.py [WORKDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile

import millpond


def main(workdir: str) -> None:
    with millpond.init(data_root=os.path.join(workdir, "millpond")) as sp:
        users = sp.from_items([{"user_id": i, "name": f"user{i}"} for i in range(100)])
        events = sp.from_items([{"user_id": i % 100, "event": f"e{i}"} for i in range(1000)])
        users = users.repartition(4, hash_by="user_id")
        events = events.repartition(4, hash_by="user_id")
        joined = sp.partial_sql(
            "SELECT u.name, count(*) AS events FROM {0} AS e JOIN {1} AS u USING (user_id) GROUP BY u.name",
            events,
            users,
        )
        print(joined.explain())
        top = joined.sort("events", descending=True).take(3)
        print(top)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="millpond-plan-"))
