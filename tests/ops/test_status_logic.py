"""``bpfailover status`` logic on plain data: eligibility, problems, exit codes, rendering."""

from __future__ import annotations

import json

from bpfailover.cli import status as st
from bpfailover.protocol.topics import Topics
from tests.ops import fabricate as fab

NOW = 1_750_000_000.0
POOL = "pool1"
TOPICS = Topics("bpfailover")


def healthy_pool(now: float = NOW) -> st.PoolCollector:
    collector = st.PoolCollector(TOPICS, POOL, {"bp1": 100, "bp2": 90, "bp3": 80})
    feed(collector, "decider", fab.decider(POOL, now, producer="bp1", epoch=3))
    for node in ("bp1", "bp2", "bp3"):
        role = "producer" if node == "bp1" else "relay"
        feed(collector, "tip", fab.tip(POOL, node, now, age=5, kes=40), node)
        feed(collector, "state", fab.state(POOL, node, now, role=role, epoch=3), node)
        feed(collector, "role", fab.command(POOL, node, now, role=role, epoch=3), node)
    return collector


def feed(
    collector: st.PoolCollector,
    kind: str,
    message,
    node: str | None = None,  # type: ignore[no-untyped-def]
    *,
    retain: bool = True,
    received_at: float = NOW,
) -> bool:
    topic = TOPICS.node_topic(POOL, kind, node) if node else TOPICS.pool_topic(POOL, kind)  # type: ignore[arg-type]
    return collector.feed(topic, message.to_json(), retain=retain, received_at=received_at)


def rows(report: st.PoolReport) -> dict[str, st.NodeRow]:
    return {r.name: r for r in report.rows}


def test_healthy_pool_exits_0_with_every_standby_eligible() -> None:
    report = st.assess(healthy_pool().view, NOW)
    assert report.code == st.EXIT_OK, report.problems
    assert report.producer == "bp1" and report.epoch == 3
    r = rows(report)
    assert r["bp1"].why_not == "producer" and not r["bp1"].eligible
    assert r["bp2"].eligible and r["bp3"].eligible
    assert r["bp2"].desired == "relay" and r["bp2"].applied == "relay" and r["bp2"].epoch == 3
    assert r["bp1"].kes_periods_left == 40
    assert 4.0 <= r["bp2"].tip_age <= 6.0  # type: ignore[operator]
    assert [row.name for row in report.rows] == ["bp1", "bp2", "bp3"]  # by priority


def test_stale_offline_and_errored_standbys_make_the_pool_degraded_with_reasons() -> None:
    collector = healthy_pool()
    feed(collector, "tip", fab.tip(POOL, "bp2", NOW, age=400), "bp2")
    feed(collector, "state", fab.state(POOL, "bp3", NOW, epoch=3, online=False), "bp3")
    report = st.assess(collector.view, NOW)
    r = rows(report)
    assert r["bp2"].why_not is not None and r["bp2"].why_not.startswith("stale tip")
    assert r["bp3"].why_not == "actuator offline"
    assert report.code == st.EXIT_DEGRADED
    assert "no healthy standby" in report.problems

    feed(collector, "state", fab.state(POOL, "bp3", NOW, epoch=3, error="restart failed"), "bp3")
    assert rows(st.assess(collector.view, NOW))["bp3"].why_not == "apply error: restart failed"


def test_stale_producer_exits_2() -> None:
    collector = healthy_pool()
    feed(collector, "tip", fab.tip(POOL, "bp1", NOW, age=301), "bp1")
    report = st.assess(collector.view, NOW)
    assert report.code == st.EXIT_NO_PRODUCER
    assert any("bp1 tip is stale" in p for p in report.problems)


def test_no_producer_and_two_producers_exit_2() -> None:
    collector = healthy_pool()
    feed(collector, "state", fab.state(POOL, "bp1", NOW, role="relay", epoch=3), "bp1")
    report = st.assess(collector.view, NOW)
    assert report.code == st.EXIT_NO_PRODUCER and "no node applies the producer role" in report.problems

    feed(collector, "state", fab.state(POOL, "bp1", NOW, role="producer", epoch=3), "bp1")
    feed(collector, "state", fab.state(POOL, "bp2", NOW, role="producer", epoch=3), "bp2")
    report = st.assess(collector.view, NOW)
    assert report.code == st.EXIT_NO_PRODUCER
    assert any("more than one node applies producer: bp1, bp2" in p for p in report.problems)


def test_fenced_old_producer_is_not_counted_as_a_producer() -> None:
    collector = healthy_pool()
    feed(collector, "state", fab.state(POOL, "bp2", NOW, role="producer", epoch=3, fenced=True), "bp2")
    report = st.assess(collector.view, NOW)
    assert report.producers == ["bp1"]
    assert any("bp2: fenced itself" in n for n in report.notes)


def test_decider_offline_frozen_or_missing_is_degraded_and_paused_is_a_note() -> None:
    collector = healthy_pool()
    feed(collector, "decider", fab.decider(POOL, NOW, online=False, epoch=3))
    assert st.assess(collector.view, NOW).code == st.EXIT_DEGRADED
    feed(collector, "decider", fab.decider(POOL, NOW, frozen=True, epoch=3))
    assert st.assess(collector.view, NOW).code == st.EXIT_DEGRADED
    feed(collector, "decider", fab.decider(POOL, NOW, paused=True, epoch=3))
    report = st.assess(collector.view, NOW)
    assert report.code == st.EXIT_OK and report.paused
    assert any("paused" in n for n in report.notes)
    collector.view.decider = None
    assert st.assess(collector.view, NOW).code == st.EXIT_DEGRADED


def test_maintenance_makes_a_standby_ineligible_until_it_ends() -> None:
    collector = healthy_pool()
    feed(collector, "decider", fab.decider(POOL, NOW, epoch=3, maintenance={"bp2": NOW + 60, "bp3": NOW - 1}))
    r = rows(st.assess(collector.view, NOW))
    assert r["bp2"].why_not == "maintenance" and r["bp2"].maintenance
    assert r["bp3"].eligible and not r["bp3"].maintenance


def test_skew_only_from_live_tips_and_beyond_bound_disqualifies() -> None:
    collector = healthy_pool()
    assert rows(st.assess(collector.view, NOW))["bp2"].skew is None  # retained: unknown
    feed(collector, "tip", fab.tip(POOL, "bp2", NOW, sent_at=NOW - 30), "bp2", retain=False)
    r = rows(st.assess(collector.view, NOW, st.Rules(max_clock_skew=10)))
    assert r["bp2"].skew == 30.0
    assert r["bp2"].why_not == "clock skew +30.0s > 10s"


def test_rules_follow_the_decider_section_of_the_config() -> None:
    collector = healthy_pool()
    feed(collector, "tip", fab.tip(POOL, "bp2", NOW, age=20), "bp2")
    assert rows(st.assess(collector.view, NOW, st.Rules(stale_after=10)))["bp2"].why_not.startswith("stale")  # type: ignore[union-attr]
    assert rows(st.assess(collector.view, NOW, st.Rules(stale_after=300)))["bp2"].eligible


def test_bad_payloads_are_counted_not_raised() -> None:
    collector = healthy_pool()
    assert not collector.feed(TOPICS.tip(POOL, "bp2"), b"{not json", retain=True, received_at=NOW)
    # a tip claiming another node than its topic
    assert not collector.feed(
        TOPICS.tip(POOL, "bp2"), fab.tip(POOL, "bp3", NOW).to_json(), retain=True, received_at=NOW
    )
    assert collector.view.rejected == 2
    assert rows(st.assess(collector.view, NOW))["bp2"].eligible


def test_table_shows_every_column_and_the_verdict() -> None:
    collector = healthy_pool()
    feed(collector, "tip", fab.tip(POOL, "bp3", NOW, age=400), "bp3")
    text = st.render_table(st.assess(collector.view, NOW))
    lines = text.splitlines()
    assert lines[0].startswith("pool pool1  epoch 3  producer bp1  decider d1 online")
    for header in st.HEADERS:
        assert header in lines[1]
    bp1 = next(line for line in lines if line.startswith("bp1 "))
    assert "producer@3" in bp1 and "(producer)" in bp1 and "40" in bp1
    bp3 = next(line for line in lines if line.startswith("bp3 "))
    assert "no: stale tip" in bp3
    assert lines[-1] == "status: OK" or "status: OK" in text


def test_json_has_the_code_and_every_node() -> None:
    report = st.assess(healthy_pool().view, NOW)
    data = json.loads(st.to_json([report]))
    assert data["code"] == 0
    pool = data["pools"][0]
    assert pool["pool"] == POOL and pool["producer"] == "bp1" and pool["decider"]["online"] is True
    assert {n["name"] for n in pool["nodes"]} == {"bp1", "bp2", "bp3"}
    bp2 = next(n for n in pool["nodes"] if n["name"] == "bp2")
    assert bp2["eligible"] is True and bp2["applied"] == "relay" and bp2["epoch"] == 3


def test_node_without_a_tip_is_infinitely_stale() -> None:
    collector = healthy_pool()
    feed(collector, "tip", fab.tip(POOL, "bp2", NOW, ok=False, error="socket missing"), "bp2")
    r = rows(st.assess(collector.view, NOW))
    assert r["bp2"].tip_age is None and r["bp2"].why_not == "tip error: socket missing"
    assert st.fmt_age(None) == "never"


def test_a_decider_that_stopped_refreshing_its_status_is_degraded() -> None:
    collector = healthy_pool()
    feed(collector, "decider", fab.decider(POOL, NOW - 200, epoch=3))
    report = st.assess(collector.view, NOW, st.Rules(decider_silent_after=95))
    assert report.code == st.EXIT_DEGRADED
    assert any("has not refreshed its status" in p for p in report.problems)
    assert st.assess(collector.view, NOW, st.Rules(decider_silent_after=300)).code == st.EXIT_OK


FORGED = "x\nstatus: OK\r\x1b[2J\x1b[31mred"


def test_table_escapes_received_text_so_a_payload_cannot_forge_rows_or_drive_the_terminal() -> None:
    collector = healthy_pool()
    feed(collector, "state", fab.state(POOL, "bp2", NOW, epoch=3, error=f"apply {FORGED}"), "bp2")
    feed(collector, "tip", fab.tip(POOL, "bp3", NOW, ok=False, error=f"tip {FORGED}"), "bp3")
    feed(collector, "events", fab.event(POOL, NOW, kind="alert", reason=f"why {FORGED}"), retain=False)
    clean = st.render_table(st.assess(healthy_pool().view, NOW))
    text = st.render_table(st.assess(collector.view, NOW))
    assert "\x1b" not in text and "\r" not in text
    assert [line for line in text.splitlines() if line.startswith("status:")] == [
        "status: DEGRADED: no healthy standby"
    ]
    assert "apply x\\nstatus: OK\\r\\x1b[2J\\x1b[31mred" in text
    assert "why x\\nstatus: OK" in text and "tip x\\nstatus: OK" in text
    # one more line each for the apply error note and the last event; the rest as many as without
    assert len(text.splitlines()) == len(clean.splitlines()) + 2


def test_both_deciders_show_with_their_mode_and_two_active_ones_are_degraded() -> None:
    collector = healthy_pool()
    base = fab.decider(POOL, NOW - 2, producer="bp1", epoch=3)
    active = base.model_copy(update={"decider": "d1", "instance": "a", "mode": "active", "standby": False})
    standby = base.model_copy(update={"decider": "d2", "instance": "b", "mode": "standby", "standby": True})
    feed(collector, "deciders", active, "d1")
    feed(collector, "deciders", standby, "d2")
    report = st.assess(collector.view, NOW)
    assert report.code == st.EXIT_OK
    assert [(d[0], d[1], d[2]) for d in report.deciders] == [("d1", "active", True), ("d2", "standby", True)]
    assert "deciders: d1 active online (2.0s ago); d2 standby online (2.0s ago)" in st.render_table(report)
    assert json.loads(st.to_json([report]))["pools"][0]["deciders"][1]["mode"] == "standby"
    feed(collector, "deciders", standby.model_copy(update={"mode": "active"}), "d2")
    assert "more than one decider is active: d1, d2" in st.assess(collector.view, NOW).problems
    feed(collector, "deciders", active.model_copy(update={"online": False}), "d1")
    feed(collector, "deciders", standby, "d2")
    report = st.assess(collector.view, NOW)
    assert "d1 active OFFLINE" in st.render_table(report)
    assert any("standby d2 takes over" in n for n in report.notes)


def test_an_old_decider_status_without_the_new_fields_still_parses() -> None:
    old = b'{"v":1,"pool":"pool1","decider":"d1","online":true,"epoch":3,"updated_at":1.0}'
    status = st.DeciderStatus.model_validate_json(old)
    assert status.instance is None and status.mode is None and status.changes == []


def test_a_producer_seen_not_forging_and_a_relay_seen_forging_are_producer_problems() -> None:
    collector = healthy_pool()
    idle = fab.state(POOL, "bp1", NOW, role="producer", epoch=3).model_copy(update={"forging": False})
    feed(collector, "state", idle, "bp1")
    rogue = fab.state(POOL, "bp2", NOW, role="relay", epoch=3).model_copy(update={"forging": True})
    feed(collector, "state", rogue, "bp2")
    report = st.assess(collector.view, NOW)
    assert report.code == st.EXIT_NO_PRODUCER
    assert "producer bp1 is seen not forging (its actuator re-applies it)" in report.problems
    assert "bp2 is seen forging but does not apply producer" in report.problems
    table = st.render_table(report)
    assert "producer@3 NOT FORGING" in table and "relay@3 FORGING" in table
    assert json.loads(st.to_json([report]))["pools"][0]["nodes"][1]["forging"] is True
