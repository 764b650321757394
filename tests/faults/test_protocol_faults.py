"""Fault scenarios for the safety protocol's newer rules (DESIGN §7), end to end.

Same harness, checker and reporting as ``test_scenarios``: real processes, the real
mosquitto with TLS, compressed timings (``Timings``), no overlap allowed anywhere. Each
scenario targets one rule: a broker that rolls back or forgets, a clean stop that
promises no fence, a link that connects but loses what the node sends, an actuator that
crash-loops while cut off, a keepalive imposed by the broker, and a tip of an earlier
publisher boot arriving again, and a clean stop that cannot be reported.
"""

from __future__ import annotations

import signal
import time

import pytest

from bpfailover.actuator.atomic import atomic_write
from bpfailover.protocol.fence import advertised_fence_after
from bpfailover.protocol.wire import DecisionEvent, NodeState, RoleCommand
from tests.brokers import MosquittoProcess
from tests.faults.conftest import ClusterFactory
from tests.faults.harness import Cluster
from tests.faults.test_scenarios import (
    SLACK,
    THROUGHOUT,
    Report,
    T,
    advertised_fence,
    command_seen,
    finish,
    offline_since,
    producer_at,
    watch_quietly,
)

pytestmark = pytest.mark.broker

# The demotion bound of the harness's actuators: restart within one apply_timeout, then
# stop_command within another (``Timings.advertised_fence_after``).
DEMOTION_BOUND = 2 * T.actuator_apply_timeout


def event_seen(cluster: Cluster, kind: str, to: str, text: str, after: float) -> float | None:
    """When the decider published a DecisionEvent of ``kind`` about ``to`` whose reason has ``text``."""
    for at, event in cluster.check.messages("events", after=after, model=DecisionEvent):
        if event.kind == kind and event.to == to and text in event.reason:
            return at
    return None


def watch_no_promotion(cluster: Cluster, node: str, seconds: float) -> None:
    """For ``seconds``: fail at once if ``node`` is sent producer or its env file says producer.
    The claim under test is that it does not happen within the window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = [c for _, c in cluster.check.role_commands() if c.node == node and c.role == "producer"]
        if sent or cluster.check.env_role(node) == "producer":
            pytest.fail(f"{node} was promoted during a window where it must not be: {sent}")
        cluster.wait(lambda: True, 1, "processes alive")
        time.sleep(cluster.check.period)


def env_change(cluster: Cluster, node: str, role: str, after: float) -> float | None:
    """The first time after ``after`` that ``node``'s env file changed to ``role``."""
    return next((c.at for c in cluster.check.env_changes(after) if c.node == node and c.role == role), None)


def rejected(cluster: Cluster, node: str, reason: str, after: float) -> NodeState | None:
    """A report of ``node`` after ``after`` saying it refused a command for ``reason``."""
    for _, state in cluster.check.messages("state", node, after=after, model=NodeState):
        if state.online and state.rejected and f"rejected {reason}" in state.rejected:
            return state
    return None


def retained_seen(cluster: Cluster, node: str, role: str, epoch: int, after: float) -> float | None:
    """When the checker got a retained ``role``@``epoch`` for ``node`` from the broker (on subscribing)."""
    for at, cmd in cluster.check.messages("role", node, after=after, model=RoleCommand, retained=True):
        if cmd.role == role and cmd.epoch == epoch:
            return at
    return None


def one_producer(cluster: Cluster, producer: str) -> int | None:
    """The decider's latest epoch, once ``producer`` runs producer at it (env file and report) and every
    other node acknowledged relay at it."""
    epoch = cluster.check.highest_epoch()
    if cluster.check.env_role(producer) != "producer" or not cluster.state_is(
        producer, online=True, role="producer", epoch=epoch, pending=None
    ):
        return None
    for node in cluster.nodes:
        if node != producer and (
            cluster.check.env_role(node) != "relay"
            or not cluster.state_is(node, online=True, role="relay", epoch=epoch, pending=None)
        ):
            return None
    return epoch


def sent_since(cluster: Cluster, node: str, role: str, epoch: int, after: float) -> float | None:
    """When the decider sent ``node`` ``role`` at ``epoch`` or later, after ``after``."""
    for at, cmd in cluster.check.role_commands(after):
        if cmd.node == node and cmd.role == role and cmd.epoch >= epoch:
            return at
    return None


def test_keepalive_imposed_by_the_broker_sets_the_advertised_fence(cluster_factory: ClusterFactory,
                                                                   report: Report) -> None:
    """mosquitto's ``max_keepalive`` 10 s imposes its keepalive on the MQTT 5 actuators, which
    ask for 20 s (MQTT 5 Server Keep Alive, adopted by paho). The fence and the advertised
    fence_after follow the keepalive in force, and the actuator says so in its log."""
    configured, imposed = 20.0, 10.0
    asked = {"BPF_MQTT__KEEPALIVE": f"{configured:g}"}
    cluster = cluster_factory(start=False, injector=THROUGHOUT, node_env={"bp1": asked, "bp2": asked})
    broker = cluster.broker
    if not isinstance(broker, MosquittoProcess):
        pytest.skip("needs the local mosquitto (BPF_TEST_BROKER=local) to set max_keepalive")
    broker.stop()
    broker.configure(max_keepalive=f"{imposed:g}")
    broker.start()
    cluster.start()
    t0 = cluster.wait_bootstrapped()
    expected = advertised_fence_after(T.fence_after, imposed, DEMOTION_BOUND)
    assert expected != advertised_fence_after(T.fence_after, configured, DEMOTION_BOUND)
    advertised = {}
    for node in cluster.nodes:
        state = cluster.wait(lambda node=node: cluster.state_is(node, online=True), 5, f"{node} online")
        advertised[node] = state.fence_after
        assert state.fence_after == pytest.approx(expected), (
            f"{node} advertises fence_after {state.fence_after:g}s; with the imposed keepalive "
            f"{imposed:g}s it is {expected:g}s"
        )
        warning = f"the broker set the keepalive to {imposed:g}s (configured {configured:g}s)"
        process = cluster.nodes[node].actuator
        assert process is not None
        cluster.wait(lambda process=process, warning=warning: warning in process.log_path.read_text(), 5,
                     f"{node}'s actuator logs the imposed keepalive")
    finish(cluster, report, "keepalive imposed by the broker", t0, failover=None, theory=None,
           extra={"advertised_fence_after": advertised, "expected": expected})


def test_clean_stop_of_the_producers_actuator_waits_for_an_operator(cluster_factory: ClusterFactory,
                                                                    report: Report) -> None:
    """bp1's actuator alone is stopped cleanly (SIGTERM); bp1's node goes on forging, and then its
    tip stalls. Its clean-stop report promises no fence, so the decider must not promote bp2
    (that would be split brain): it alerts (``nofence``) and waits. The operator demotes bp1 by
    hand and runs ``bpfailover failover --to bp2 --force``, which promotes bp2."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.stop_actuator("bp1")
    cluster.wait(lambda: cluster.state_is("bp1", online=False, stopped=True, fence_after=0.0), 5,
                 "bp1's clean-stop report: offline, stopped, no fence promised")
    assert cluster.check.env_role("bp1") == "producer", "an acknowledged clean stop leaves the node as it was"
    alert = cluster.wait(lambda: event_seen(cluster, "alert", "bp1", "stopped cleanly", t0), 5,
                         "the decider's nofence alert for bp1")
    stalled = cluster.stall("bp1")
    # The decider starts the failover (bp1 stale, bp2 eligible) and sends bp1 relay@2 ...
    cluster.wait(lambda: command_seen(cluster, "bp1", "relay", 2, stalled), T.stale_after + 3,
                 "the failover's demotion of bp1 (relay@2)")
    # ... but nothing will demote bp1: had the decider counted on a fence (fence_after 0 + its
    # keepalive + margin after the stop), it would have promoted bp2 by now, and some seconds more.
    watch_no_promotion(cluster, "bp2", T.fence_wait(0.0) + 3)
    assert cluster.check.env_role("bp1") == "producer"

    # The operator: makes sure bp1 no longer forges (demotes it by hand), then forces the failover.
    files = cluster.check.nodes["bp1"]
    atomic_write(files.env_file, files.relay_env)
    forced = cluster.note("operator demoted bp1 by hand")
    answer = cluster.operator("failover", "--to", "bp2", "--force")
    assert answer.returncode == 0, f"exit {answer.returncode}: {answer.stdout}{answer.stderr}"
    promoted = producer_at(cluster, "bp2", 2, forced, 10)
    finish(cluster, report, "clean stop of the producer's actuator", t0, failover=None, theory=None,
           extra={"alert_after_stop_s": round(alert - t0, 3), "operator_answer": answer.stdout.strip(),
                  "promoted_after_operator_s": round(promoted - forced, 3)})


def test_broker_rolled_back_to_a_snapshot_taken_before_the_failover(cluster_factory: ClusterFactory,
                                                                    report: Report) -> None:
    """A snapshot of mosquitto's persistence is taken while bp1 is producer@1. bp1 is cut off and
    fences; bp2 is promoted at epoch 2. Then mosquitto crashes (SIGKILL) and comes back from the
    snapshot: the broker holds producer@1 for bp1 (and relay@1 for bp2) again. bp1 is healed and
    sees that copy first (the decider is held, SIGSTOP, until it has: the worst order).

    bp1 must refuse producer@1 (``reapply``: it fenced at that epoch); the decider, resumed,
    republishes its newer commands (relay for bp1, producer for bp2, epoch >= 2); the pool ends with one
    producer, bp2, and no overlap at any time."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    snapshot = cluster.broker_snapshot()
    advertised = advertised_fence(cluster, "bp1")
    t0 = cluster.network("bp1", "cut")
    theory = T.theoretical_failover(0.0, advertised)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    fenced = env_change(cluster, "bp1", "relay", t0)
    assert fenced is not None and fenced < promoted, "bp1 must have fenced before bp2 was promoted"

    cluster.pause_decider()
    crash = cluster.broker_kill()
    cluster.broker_restore(snapshot)
    cluster.broker_start()
    cluster.wait(lambda: retained_seen(cluster, "bp1", "producer", 1, crash), 10,
                 "the rolled-back broker holding producer@1 for bp1")
    healed = cluster.network("bp1", "heal")
    refusal = cluster.wait(lambda: rejected(cluster, "bp1", "reapply", healed), 20,
                           "bp1 refusing the rolled-back producer@1 (reapply)")
    assert refusal.role == "relay" and refusal.epoch == 1 and refusal.fenced
    assert cluster.check.env_role("bp1") == "relay"

    resumed = cluster.pause_decider(False)
    # Its commands at epoch 2 (or at 3, if it re-commanded bp2 first: see below) replace the old ones.
    cluster.wait(lambda: sent_since(cluster, "bp1", "relay", 2, resumed)
                 and sent_since(cluster, "bp2", "producer", 2, resumed), 15,
                 "the decider republishing relay for bp1 and producer for bp2 at epoch 2 or later")
    # bp2 lost the broker too while it was down (longer than fence_after) and fenced: the decider
    # re-commands it at epoch 3 (recovery). Either way the pool ends with bp2, and only bp2, producer.
    final = cluster.wait(lambda: one_producer(cluster, "bp2"), 15, "bp2 producer, bp1 relay, last epoch")
    assert env_change(cluster, "bp1", "producer", fenced) is None, "bp1 forged again"
    sent = [f"{c.node}@{c.epoch}" for _, c in cluster.check.role_commands(crash) if c.role == "producer"]
    assert all(c.startswith("bp2@") for c in sent), f"only bp2 may be promoted after the rollback: {sent}"
    will = offline_since(cluster, "bp1", t0)
    finish(cluster, report, "broker rolled back to an older snapshot", t0, failover=promoted - t0,
           theory=theory, extra={"fenced_after_s": round(fenced - t0, 3),
                                 "will_after_s": None if will is None else round(will - t0, 3),
                                 "bp1_refused": refusal.rejected, "final_epoch": final})


def producer_of(cluster: Cluster) -> tuple[str, int] | None:
    """(node, epoch) once exactly one node is producer at the decider's latest epoch, all others relay."""
    for node in cluster.nodes:
        epoch = one_producer(cluster, node)
        if epoch is not None:
            return node, epoch
    return None


def test_broker_comes_back_empty_while_the_decider_runs(cluster_factory: ClusterFactory,
                                                        report: Report) -> None:
    """The broker crashes (SIGKILL) and stays away for longer than the fence time: bp1 fences.
    It comes back EMPTY (its persistence deleted): no retained role command, state or status.
    The decider, which ran all along, must give the pool a producer again within a bound: it
    re-commands bp1 (fenced, so only at a new epoch) or fails over; no overlap."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    t0 = cluster.broker_kill()
    fenced = cluster.wait(lambda: env_change(cluster, "bp1", "relay", t0), T.fence_after + 3,
                          "bp1 fenced while the broker is down")
    cluster.wait(lambda: time.monotonic() >= fenced + 1.0, 5, "the outage outlasting the fence by 1 s")
    cluster.broker_restore(None)
    back = cluster.broker_start()
    # Every link reconnects (paho's back-off: a few seconds at most after this short outage), the
    # actuators report their stored epochs, and the decider re-commands: within a keepalive or so.
    bound = 2 * T.keepalive
    node, epoch = cluster.wait(lambda: producer_of(cluster), bound + SLACK, "one producer again")
    resumed = cluster.check.producer_since(node, back)
    assert resumed is not None
    assert epoch > 1, f"{node} producer at epoch {epoch}: a fenced node takes producer only at a higher one"
    assert not [c for _, c in cluster.check.role_commands(back) if c.role == "producer" and c.node != node]
    finish(cluster, report, "broker comes back empty", t0, failover=None, theory=None,
           extra={"fenced_after_s": round(fenced - t0, 3), "outage_s": round(back - t0, 3),
                  "producer_again_after_return_s": round(resumed - back, 3), "producer": f"{node}@{epoch}",
                  "bound_s": bound})


def last_report(cluster: Cluster, node: str, before: float) -> float:
    """When the checker last received an online report of ``node`` before ``before``: the broker
    acknowledged it then, so the actuator's last contact is no earlier (minus the one-way delay)."""
    states = cluster.check.messages("state", node, model=NodeState)
    reports = [at for at, s in states if s.online and at <= before]
    assert reports, f"no report from {node} before the fault"
    return reports[-1]


CRASH_EVERY = 2.0  # seconds each actuator process of the crash loop lives: well below fence_after
CRASH_FENCE_AFTER = 8.0


def test_actuator_crash_loop_while_cut_off_still_fences(cluster_factory: ClusterFactory,
                                                        report: Report) -> None:
    """bp1 is cut off from the broker, and its actuator is SIGKILLed every 2 s and restarted at once
    (a crash loop under systemd's Restart=always), faster than its fence_after (8 s here). Each
    process must start from the last contact kept in state_dir, not from its own start: bp1 fences
    within its advertised fence time of its last acknowledged report, and bp2 is promoted only
    after that."""
    cluster = cluster_factory(injector=THROUGHOUT,
                              node_env={"bp1": {"BPF_ACTUATOR__FENCE_AFTER": f"{CRASH_FENCE_AFTER:g}"}})
    cluster.wait_bootstrapped()
    advertised = advertised_fence(cluster, "bp1")
    t0 = cluster.network("bp1", "cut")
    contact = last_report(cluster, "bp1", t0)
    crashes = 0

    def fenced() -> float | None:
        return env_change(cluster, "bp1", "relay", t0)

    while fenced() is None:
        process = cluster.nodes["bp1"].actuator
        assert process is not None
        cluster.wait(lambda process=process: fenced() or time.monotonic() - process.started >= CRASH_EVERY,
                     CRASH_EVERY + 1, "the next crash")
        if fenced() is not None:
            break
        assert time.monotonic() - contact < advertised + 3, f"bp1 not fenced after {crashes} crashes"
        cluster.kill_actuator("bp1")
        cluster.start_actuator("bp1")
        crashes += 1
    fence = fenced()
    assert fence is not None
    assert crashes >= int(CRASH_FENCE_AFTER / CRASH_EVERY) - 1, f"only {crashes} crashes before the fence"
    assert fence - contact <= advertised, (
        f"bp1 fenced {fence - contact:.2f}s after its last acknowledged report; it advertises {advertised:g}s"
    )
    theory = T.theoretical_failover(0.0, advertised)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + 10)
    assert fence < promoted, "bp1 must have fenced before bp2 was promoted"
    finish(cluster, report, "actuator crash loop while cut off", t0, failover=promoted - t0, theory=theory,
           extra={"crashes": crashes, "fenced_after_contact_s": round(fence - contact, 3),
                  "advertised_fence_after": advertised,
                  "fenced_before_promotion_s": round(promoted - fence, 3)})


def wills(cluster: Cluster, node: str, after: float) -> list[tuple[float, str | None]]:
    """Every Last Will (offline NodeState) of ``node`` after ``after``: (received, connection)."""
    return [(at, s.conn) for at, s in cluster.check.messages("state", node, after=after, model=NodeState)
            if not s.online and not s.stopped]


def test_lossy_link_producer_fences_before_the_standby_is_promoted(cluster_factory: ClusterFactory,
                                                                  report: Report) -> None:
    """bp1's actuator's link connects but loses everything the actuator sends (the proxy passes the
    TLS handshake and MQTT CONNECT of each connection, then drops what the node sends while the
    broker's bytes still arrive); bp1's publisher is connected directly, so its tip stays fresh
    and only the lost actuator matters. A CONNACK is no contact: bp1 must fence within its
    advertised fence time of its last acknowledged report. Each connection ends after a keepalive
    timeout (the broker's, 1.5 x keepalive, or paho's, 2 x keepalive) with its Will, and paho
    reconnects. The decider must count bp1 certainly fenced from the Will of the connection its
    last report came over (a later connection's Will, with no report through, does not restart
    its wait), and fail over to bp2 then; never before bp1 fenced."""
    cluster = cluster_factory(injector=THROUGHOUT, direct_publishers=("bp1",))
    cluster.wait_bootstrapped()
    advertised = advertised_fence(cluster, "bp1")
    t0 = cluster.network("bp1", "lossy")
    contact = last_report(cluster, "bp1", t0)
    fence = cluster.wait(lambda: env_change(cluster, "bp1", "relay", t0), advertised + 3, "bp1 fenced")
    assert fence - contact <= advertised, (
        f"bp1 fenced {fence - contact:.2f}s after its last acknowledged report; it advertises {advertised:g}s"
    )
    assert not [c for _, c in cluster.check.role_commands(t0) if c.node == "bp1"], "demoted by a command"
    # The first Will: the connection open at the fault ends after a keepalive timeout at the latest.
    will_delay = 2 * T.keepalive + 1.0
    theory = T.theoretical_failover(will_delay, advertised)
    # (Before main's 61c8b63, every Will restarted the wait, and bp2 was never promoted.)
    promoted = producer_at(cluster, "bp2", 2, t0, theory + SLACK)
    assert fence < promoted, "bp1 must have fenced before bp2 was promoted"
    will, command = offline_since(cluster, "bp1", t0), command_seen(cluster, "bp2", "producer", 2)
    assert will is not None and command is not None
    assert command - will >= T.fence_wait(advertised) - 0.3, f"promoted {command - will:.2f}s after the Will"
    finish(cluster, report, "lossy link: connects, loses what the actuator sends", t0,
           failover=promoted - t0, theory=theory,
           extra={"fenced_after_contact_s": round(fence - contact, 3), "advertised_fence_after": advertised,
                  "wills": [f"{at - t0:+.2f}s {conn}" for at, conn in wills(cluster, "bp1", t0)],
                  "proxy_dropped_bytes": cluster.nodes["bp1"].proxy.dropped_bytes})


def test_tip_from_an_earlier_publisher_boot_does_not_make_the_producer_stale(
    cluster_factory: ClusterFactory, report: Report
) -> None:
    """bp1's publisher restarts (a new boot). Then its last tip of the earlier boot, by now older
    than stale_after, arrives again: as a rolled-back broker delivers its retained copy to a
    decider that resubscribes (or as a replay). bp1's newer tips are fresh: nothing may change."""
    cluster = cluster_factory()
    cluster.wait_bootstrapped()
    old = cluster.last_tip("bp1")
    assert old is not None
    cluster.kill_publisher("bp1")
    restarted = cluster.start_publisher("bp1")
    cluster.wait(lambda: cluster.tips_since("bp1", restarted.started) >= T.rise, 10, "bp1 reporting anew")
    tip = old[1]
    assert tip.tip_time is not None
    cluster.wait(lambda: time.time() - tip.tip_time > T.stale_after + 0.5, T.stale_after + 5,  # type: ignore[operator]
                 "the earlier boot's last tip older than stale_after")
    t0 = cluster.note(f"bp1's tip of boot {tip.boot} seq {tip.seq} again (retained)")
    cluster.broker.publish(cluster.check.topics.tip(cluster.broker.pool, "bp1"), tip.to_json(), retain=True)
    # The decider evaluates on every message: a failover would start at once.
    watch_quietly(cluster, 2.0)
    assert cluster.check.env_role("bp1") == "producer"
    finish(cluster, report, "tip from an earlier publisher boot", t0, failover=None, theory=None)


def test_clean_stop_not_acknowledged_demotes_the_node_within_its_fence_time(
    cluster_factory: ClusterFactory, report: Report
) -> None:
    """bp1's link becomes a partition where TCP stays up (blackhole); 1.5 x keepalive later, shortly
    before its fence is due, its actuator is stopped cleanly (SIGTERM). Its clean-stop
    report cannot get through, so the decider may still count on its fence, which will not happen
    once it has exited: it must demote the node before it exits, and no later than its advertised
    fence time after its last acknowledged report, as it would have had it kept running."""
    cluster = cluster_factory(injector=THROUGHOUT)
    cluster.wait_bootstrapped()
    advertised = advertised_fence(cluster, "bp1")
    t0 = cluster.network("bp1", "blackhole")
    contact = last_report(cluster, "bp1", t0)
    process = cluster.nodes["bp1"].actuator
    assert process is not None
    cluster.retired.append(process)  # it is to exit, with code 0
    # Stopped before paho gives the link up (and the fence falls due at once): what it does while
    # stopping must demote the node by the time it promised. paho gives up between one and two
    # keepalives after the last bytes it received (its PINGREQ comes a keepalive after them, or
    # earlier), so 0.8 keepalive after the partition is before it, with a margin for a loaded host.
    cluster.wait(lambda: time.monotonic() >= t0 + 0.8 * T.keepalive, 2 * T.keepalive, "the silence")
    stopping = cluster.note("SIGTERM bp1's actuator")
    process.kill(signal.SIGTERM)
    demoted = cluster.wait(lambda: env_change(cluster, "bp1", "relay", t0), advertised + 30,
                           "bp1 demoted by its stopping actuator")
    cluster.wait(lambda: not process.alive, 10, "bp1's actuator exited")
    assert process.popen.returncode == 0
    assert "did not acknowledge the clean-stop report" in process.log_path.read_text()
    states = cluster.check.messages("state", "bp1", after=t0, model=NodeState)
    assert not [s for _, s in states if s.stopped], "the clean-stop report crossed the partition"
    result = finish(cluster, report, "clean stop not acknowledged", t0, failover=None, theory=None,
                    extra={"demoted_after_contact_s": round(demoted - contact, 3),
                           "demoted_after_sigterm_s": round(demoted - stopping, 3),
                           "advertised_fence_after": advertised})
    assert demoted - contact <= advertised, (
        f"bp1 demoted {demoted - contact:.2f}s after its last acknowledged report; it advertises "
        f"{advertised:g}s: {result['actions']}"
    )
