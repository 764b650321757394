"""The end of the decider's retained read: expected topics or a quiet spell, in any order."""

from __future__ import annotations

from bpfailover.decider.retained import RetainedRead, expected_topics
from bpfailover.protocol.topics import Topics
from bpfailover.settings import PoolNode, PoolSpec

TOPICS = Topics("bpf")
POOL = PoolSpec(id="p1", nodes=[PoolNode(name="a"), PoolNode(name="b")])


def test_the_expected_topics_are_each_nodes_tip_state_and_role_and_the_pools_status() -> None:
    assert expected_topics(TOPICS, [POOL]) == {
        "bpf/p1/decider",
        "bpf/p1/tip/a",
        "bpf/p1/state/a",
        "bpf/p1/role/a",
        "bpf/p1/tip/b",
        "bpf/p1/state/b",
        "bpf/p1/role/b",
    }


def test_the_read_ends_when_every_expected_topic_arrived_whatever_the_order() -> None:
    expected = sorted(expected_topics(TOPICS, [POOL]))
    for order in (expected, list(reversed(expected))):
        read = RetainedRead(expected, quiet=2.0)
        read.subscribed(10.0)
        # A live message first (AWS IoT Core does not order retained before live ones): it
        # counts as its topic's arrival but does not end the read by itself.
        assert read.over(order[0], False, 10.1) is None
        for topic in order[1:-1]:
            assert read.over(topic, True, 10.2) is None
        assert read.over(order[-1], True, 10.3) == "every one of the 7 expected topics arrived"


def test_a_topic_with_nothing_retained_ends_the_read_after_a_quiet_spell() -> None:
    read = RetainedRead(expected_topics(TOPICS, [POOL]), quiet=2.0)
    read.subscribed(10.0)
    assert read.over("bpf/p1/tip/a", True, 10.5) is None
    assert read.over(None, False, 12.4) is None, "less than 2 s since the last retained message"
    assert read.over("bpf/p1/tip/b", False, 12.45) is None, "a live message does not extend the wait"
    assert read.over(None, False, 12.5) == "then nothing for 2s, 5 expected topics without a message"
    assert (read.count, read.seconds) == (1, 0.5)


def test_messages_before_the_subacks_count_but_the_read_waits_for_the_subacks() -> None:
    expected = expected_topics(TOPICS, [POOL])
    read = RetainedRead(expected, links=["work", "r1"])
    for topic in expected:
        assert read.over(topic, True, 1.0) is None
    read.subscribed(1.5, "work")
    assert read.over(None, False, 9.0) is None, "the second connection's SUBACKs are not in"
    read.subscribed(2.0, "r1")
    assert read.over(None, False, 2.0) is not None


def test_a_lost_connection_starts_the_read_over_at_its_next_subacks() -> None:
    expected = expected_topics(TOPICS, [POOL])
    read = RetainedRead(expected, quiet=2.0, links=["work", "r1"])
    read.subscribed(1.0, "work")
    read.subscribed(1.0, "r1")
    for topic in sorted(expected)[:-1]:
        read.over(topic, True, 1.1)
    read.lost("r1")
    assert read.over(sorted(expected)[-1], True, 1.2) is None
    assert read.over(None, False, 99.0) is None, "a new connection: wait for its SUBACKs again"
    read.subscribed(100.0, "r1")
    assert read.missing == 6, "what the old connection delivered is sent again"
    assert read.over(None, False, 102.0) == "then nothing for 2s, 6 expected topics without a message"


def test_at_least_keeps_a_complete_read_open_for_the_peers_presences() -> None:
    expected = expected_topics(TOPICS, [POOL])
    read = RetainedRead(expected)
    read.at_least = 12.0
    read.subscribed(0.0)
    for topic in expected:
        assert read.over(topic, True, 0.5) is None
    assert read.over(None, False, 11.9) is None
    assert read.over(None, False, 12.0) is not None
