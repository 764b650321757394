from __future__ import annotations

import pytest

from bpfailover.protocol.topics import Topic, TopicError, Topics, check_id


def test_builders_follow_the_layout() -> None:
    t = Topics("bpfailover")
    assert t.tip("pool1", "bp1") == "bpfailover/pool1/tip/bp1"
    assert t.state("pool1", "bp1") == "bpfailover/pool1/state/bp1"
    assert t.role("pool1", "bp2") == "bpfailover/pool1/role/bp2"
    assert t.dryrun("pool1", "bp2") == "bpfailover/pool1/dryrun/bp2"
    assert t.decider("pool1") == "bpfailover/pool1/decider"
    assert t.control("pool1") == "bpfailover/pool1/control"
    assert t.events("pool1") == "bpfailover/pool1/events"
    assert t.wildcard("tip") == "bpfailover/+/tip/+"


def test_at_most_seven_levels_even_with_a_two_level_prefix() -> None:
    t = Topics("org/bpf")
    assert len(t.role("pool1", "bp1").split("/")) <= 7


def test_parse_round_trips() -> None:
    t = Topics("x")
    assert t.parse("x/pool1/tip/bp1") == Topic("pool1", "tip", "bp1")
    assert t.parse("x/pool1/control") == Topic("pool1", "control")


@pytest.mark.parametrize(
    "topic", ["y/pool1/tip/bp1", "x/pool1/tip", "x/pool1/bogus/bp1", "x/Pool1/tip/bp1", "x/p/tip/a/b"]
)
def test_parse_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics("x").parse(topic)


@pytest.mark.parametrize("bad", ["", "a" * 33, "BP1", "bp/1", "bp+1", "bp#", "bp 1", "bp1\n"])
def test_ids_are_validated(bad: str) -> None:
    with pytest.raises(TopicError):
        check_id(bad, "node name")
    with pytest.raises(TopicError):
        Topics().tip("pool1", bad)


def test_wildcards_in_prefix_are_refused() -> None:
    with pytest.raises(TopicError):
        Topics("a/+")


@pytest.mark.parametrize("topic", ["x/pool1/tip/bp1\n", "x/pool1\n/tip/bp1", "x/pool1/decider\n"])
def test_parse_rejects_a_trailing_newline_in_any_level(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics("x").parse(topic)


def test_a_prefix_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(TopicError):
        Topics("bpfailover\n")
