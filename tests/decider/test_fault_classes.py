"""The second round of safety on a fake clock: a producer that lost its role, a broker that
rolled back, a clean stop, one Will after another, rogue producers below our epoch, and a
decider that is behind."""

from __future__ import annotations

from tests.decider.sim import KEEPALIVE, POOL, Sim


def producer_commands(sim: Sim, node: str) -> list[int]:
    return [c.epoch for _, c in sim.roles if c.node == node and c.role == "producer"]


def test_a_producer_that_fenced_itself_is_recommanded_at_a_new_epoch() -> None:
    # The broker lost its retained state while P was fenced: nobody would ever command it again.
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    sim.cut("bp1", will=False)  # no Will either: the broker itself was away
    sim.run(12)
    assert sim.actuators["bp1"].fenced
    sim.lose_retained_roles()
    sim.reconnect("bp1")  # reports relay, fenced, at epoch 1
    assert sim.run(10, until=lambda: sim.actuators["bp1"].role == "producer")
    assert producer_commands(sim, "bp1") == [1, 2]
    assert sim.actuators["bp1"].epoch == 2
    assert "recovery" in sim.kinds() and "failover" not in sim.kinds()
    assert sim.overlaps == []


def test_recommanding_a_fenced_producer_is_not_held_by_a_pause() -> None:
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    assert sim.control("pause").ok
    sim.cut("bp1")
    sim.run(12)
    sim.reconnect("bp1")
    assert sim.run(10, until=lambda: sim.actuators["bp1"].role == "producer")
    assert sim.overlaps == []


def test_a_producer_certainly_fenced_is_replaced_before_its_tip_goes_stale() -> None:
    # Its node still relays (tips fresh) but its actuator is gone and fenced: nobody forges.
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    sim.cut("bp1")
    cut = sim.clock.mono
    assert sim.run(60, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") - cut <= 10.0 + KEEPALIVE + sim.settings.fence_margin + 1
    assert sim.overlaps == []


def test_an_older_retained_command_read_back_is_overwritten_with_ours() -> None:
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    sim.cut("bp1")
    assert sim.run(60, until=lambda: sim.producer() == "bp2")
    newest = {n: sim.retained[("role", n)] for n in ("bp1", "bp2")}
    old = next(c for _, c in sim.roles if c.node == "bp1" and c.role == "producer" and c.epoch == 1)
    sim.retained[("role", "bp1")] = old  # the broker restarted from a snapshot
    sim.drop_decider()
    sim.connect_decider()
    assert sim.retained[("role", "bp1")].epoch == newest["bp1"].epoch
    assert sim.retained[("role", "bp1")].role == "relay"
    republished = [c for _, c in sim.roles if c.reason.startswith("republish")]
    assert [(c.node, c.role, c.epoch) for c in republished] == [("bp1", "relay", newest["bp1"].epoch)]


def test_a_newer_retained_command_is_never_overwritten() -> None:
    sim = Sim()
    sim.bootstrapped()
    before = len(sim.roles)
    newer = sim.retained[("role", "bp2")].model_copy(update={"epoch": 9, "decider": "dec-2"})
    sim.retained[("role", "bp2")] = newer
    sim.drop_decider()
    sim.connect_decider()
    sim.run(5)
    assert not [c for _, c in sim.roles[before:] if c.node == "bp2" and c.epoch < 9]


def test_a_cleanly_stopped_producer_is_never_taken_as_fenced() -> None:
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    sim.stop_cleanly("bp1")  # its node runs on as producer
    sim.publishers["bp1"].chain = "dead"
    sim.run(300)
    assert sim.producer() == "bp1"
    assert producer_commands(sim, "bp2") == []
    alerts = [e.reason for e in sim.events if e.kind == "alert"]
    assert any("stopped cleanly" in r and "--force" in r for r in alerts), alerts
    assert sim.overlaps == []
    event = sim.control("failover", to="bp2", force=True)  # the operator made sure it stopped
    assert event.ok, event.reason
    sim.actuators["bp1"].role = "relay"
    assert sim.run(30, until=lambda: sim.producer() == "bp2")


def test_a_will_after_a_clean_stop_of_the_same_connection_promises_nothing() -> None:
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    sim.stop_cleanly("bp1")
    sim.actuators["bp1"].stopped = False
    sim.publish_will("bp1")  # the DISCONNECT got lost: the broker sends this connection's Will
    sim.publishers["bp1"].chain = "dead"
    sim.run(300)
    assert producer_commands(sim, "bp2") == []


def test_the_will_of_a_connection_that_got_a_report_through_restarts_the_fence_wait() -> None:
    # A flapping link: the actuator reconnects and gets its report through once (contact: its
    # fence clock restarts), then loses the link again.
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    wait = 10.0 + KEEPALIVE + sim.settings.fence_margin
    sim.cut("bp1")  # Will of connection c0
    sim.run(wait - 3)
    act = sim.actuators["bp1"]
    act.conn += 1
    sim.publish_state("bp1")  # connection c1's report, acknowledged: the actuator's contact
    act.fenced, act.role = False, "producer"
    sim.publish_will("bp1")  # ... and c1's Will
    last_will = sim.clock.mono
    assert sim.run(60, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") >= last_will + wait


def test_the_will_of_a_connection_that_got_nothing_through_does_not_restart_it() -> None:
    # A lossy link that only connects: Will after Will, no report ever acknowledged, so the
    # actuator's fence clock runs from its last real contact. Waiting anew at each Will would
    # never end: the pool would stay without a producer for as long as the link flaps.
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    wait = 10.0 + KEEPALIVE + sim.settings.fence_margin
    sim.cut("bp1")
    first = sim.clock.mono
    act = sim.actuators["bp1"]
    for _ in range(20):
        sim.run(4)
        act.conn += 1  # connects, its report is lost, its Will comes
        sim.publish_will("bp1")
        if sim.producer() == "bp2":
            break
    assert sim.producer() == "bp2"
    assert first + wait <= sim.promoted_at("bp2") <= first + wait + 1
    assert sim.overlaps == []


def test_the_same_will_delivered_twice_does_not_restart_the_wait() -> None:
    sim = Sim(fence_after=10.0)
    sim.bootstrapped()
    wait = 10.0 + KEEPALIVE + sim.settings.fence_margin
    sim.cut("bp1")
    first = sim.clock.mono
    sim.run(5)
    sim.publish_will("bp1")  # a QoS-1 duplicate of the same Will
    assert sim.run(60, until=lambda: sim.producer() == "bp2")
    assert sim.promoted_at("bp2") <= first + wait + 1


def test_a_rogue_producer_below_our_epoch_is_demoted_above_every_epoch() -> None:
    sim = Sim()
    sim.bootstrapped()
    sim.run(130)  # past min_switch_interval; nothing to do with the rogue, which is no switch
    ours = sim.decider.view(POOL).epoch
    rogue = sim.actuators["bp2"]
    rogue.role, rogue.stored_role, rogue.epoch = "producer", "producer", 0  # a cloned disk, say
    sim.publish_state("bp2")
    sim.run(5)
    demoted = [c for _, c in sim.roles if c.node == "bp2" and c.role == "relay" and c.epoch > ours]
    assert demoted, sim.roles
    assert sim.actuators["bp2"].role == "relay"
    assert sim.producer() == "bp1"
    assert any(e.kind == "alert" and "without our command" in e.reason for e in sim.events)


def test_a_decider_that_is_behind_learns_a_higher_epoch_and_does_not_fight_it() -> None:
    sim = Sim()
    sim.bootstrapped()
    # Another decider (or lost broker state) moved the pool to bp2 at epoch 7.
    for name, role in (("bp1", "relay"), ("bp2", "producer")):
        act = sim.actuators[name]
        act.role, act.stored_role, act.epoch = role, role, 7
    sim.publish_state("bp1")
    sim.publish_state("bp2")
    before = len(sim.roles)
    sim.run(30)
    assert sim.decider.view(POOL).epoch == 7 and sim.decider.view(POOL).producer == "bp2"
    assert sim.roles[before:] == []  # nothing commanded: it follows
    assert "learned" in sim.kinds()


def test_a_target_that_fenced_itself_mid_promotion_is_tried_again_at_a_new_epoch() -> None:
    sim = Sim(nodes={"bp1": 100}, fence_after=5.0)
    sim.actuators["bp1"].auto = False  # holds the command, as if its link were slow
    sim.start()
    sim.run(20, until=lambda: bool(sim.actuators["bp1"].inbox))
    act = sim.actuators["bp1"]
    cmd = act.inbox.popleft()
    act.apply(cmd)  # producer at epoch 1 ...
    act.role, act.fenced = "relay", True  # ... then cut off long enough to fence
    sim.publish_state("bp1")
    act.auto = True
    assert sim.run(60, until=lambda: sim.actuators["bp1"].role == "producer")
    assert sim.actuators["bp1"].epoch >= 2
    assert sim.overlaps == []
