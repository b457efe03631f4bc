"""Read views over several repositories of a `gateway.store.api.Store`.

Takes a store; produces what `status` and the metrics show. Reads only.
"""

from __future__ import annotations

from gateway.store.api import Store


async def queue_counts(store: Store) -> dict[str, int]:
    """Notices and children by state, as `notice.<state>` and `child.<state>`."""
    notices = await store.notices.count_by_state()
    children = await store.children.count_by_state()
    return {**{f"notice.{k}": n for k, n in notices.items()},
            **{f"child.{k}": n for k, n in children.items()}}
