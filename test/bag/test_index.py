"""Offline pairing uses the node's nearest-in-time rule over the whole topic; raw stores stay bounded."""

from __future__ import annotations

import numpy as np

from lotus2_ros.bag.index import RecentMessages, StampIndex
from lotus2_ros.perception.association import NearestInTime


def test_nearest_stamp_matches_the_node_rule_including_ties_and_window():
    rng = np.random.default_rng(0)
    stamps = [int(s) for s in rng.integers(0, 10**9, size=200)] + [500, 500, 600]
    index = StampIndex(stamps)
    live = NearestInTime(capacity=10_000)
    for s in stamps:
        live.add(s, s)
    for query in [int(q) for q in rng.integers(-10**6, 10**9 + 10**6, size=500)] + [550, 499, 601]:
        for window in (0, 10**5, 10**7, None):
            found = live.nearest(query, 2**62 if window is None else window)
            assert index.nearest(query, window) == (None if found is None else found[0])
    assert index.nearest(550, 50) == 500  # equidistant: the earlier one, as live
    assert len(index) == len(set(stamps))


def test_recent_messages_keep_pinned_partners_beyond_the_limit():
    store = RecentMessages(keep=2)
    store.pin(1)
    for s in range(1, 6):
        store.add(s, f"m{s}".encode())
    assert store.get(1) == b"m1" and store.get(2) is None and store.get(5) == b"m5"
    assert store.seen == {1, 2, 3, 4, 5}
    store.unpin(1)
    assert store.get(1) is None and store.get(4) == b"m4"
