"""Hostile input through the real broker into a running decider and actuators (tests/hostile/world.py).

The principle: a node's credentials may affect that node's own standing only — never the
decider, never the rest of the pool; no credential short of the decider's key can switch
failover off for the pool or cause split brain. After each batch: nothing died, no role
changed that the credential had no say in, the rejections are counted, and a real failover
still happens when the producer's tip stalls.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from bpfailover.protocol.signing import SignatureError, generate_key, load_signing_key, sign, verify
from bpfailover.protocol.wire import (
    ControlRequest,
    DeciderStatus,
    NodeState,
    PayloadRejected,
    RoleCommand,
    TipReport,
    decode,
)
from tests.brokers import ADMIN_USER, wait_for
from tests.hostile.payloads import Context, hostile_message
from tests.hostile.world import World, bundle_users, now_pair, writable

pytestmark = pytest.mark.broker

EXAMPLES = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
BATCH = st.lists  # one list is one broker round trip


@pytest.fixture(scope="module")
def ctx(world: World) -> Context:
    return Context(
        pool=world.pool,
        nodes=list(world.broker.nodes),
        topics=world.topics,
        foreign_key=generate_key(),
        operator_key=load_signing_key(world.broker.bundle / "keys" / "operator-signing.key"),
    )


@dataclass
class Before:
    producer: str
    epoch: int
    seen: int
    rejections: int
    env: tuple[bytes, list[str]]


def mark(world: World) -> Before:
    wait_for(world.settled, 10, f"a settled pool (view: {world.describe()})")
    view = world.view
    assert view.producer is not None
    seen, rejections = len(world.observer.seen), world.service.rejections.total()
    return Before(view.producer, view.epoch, seen, rejections, world.env())


def owner_of(user: str, nodes: list[str]) -> str | None:
    """The node whose credentials ``user`` are (``bp1-publisher`` or ``bp1-actuator``: bp1)."""
    for node in nodes:
        if user == node or user.startswith(f"{node}-"):
            return node
    return None


def must_reject(world: World, topic: str, payload: bytes, retain: bool) -> bool:
    """Whether the decider must count this message (it reads the topic and must refuse it)."""
    where = world.topics.parse(topic)
    if not payload or where.kind in ("events", "dryrun"):
        return False
    if where.node is not None and where.kind != "deciders" and where.node not in world.broker.nodes:
        return True
    if where.kind == "control":
        return True  # refused by the schema or the gate (unsigned, foreign, stale or a replay)
    model: Any = {"tip": TipReport, "state": NodeState, "role": RoleCommand}.get(where.kind, DeciderStatus)
    node = where.node if where.kind in ("tip", "state", "role") else None
    try:
        message = decode(model, payload, pool=world.pool, node=node)
        if where.kind in ("role", "decider", "deciders"):
            verify(message, world.key)
    except (PayloadRejected, SignatureError):
        return True
    return where.kind == "deciders" and message.decider != where.node


def assert_pool_intact(world: World, before: Before, owner: str | None, what: str) -> None:
    dead = world.alive()
    assert not dead, f"{what}: died: {dead}"
    view = world.view
    assert not view.paused and not view.frozen and not view.maintenance, f"{what}: {world.describe()}"
    if owner is None:
        # Nobody's own standing was at stake: nothing changed at all.
        assert (view.producer, view.epoch) == (before.producer, before.epoch), f"{what}: {world.describe()}"
        assert world.observer.genuine_roles(world.key, before.seen) == [], f"{what}: the decider commanded"
        assert world.env() == before.env, f"{what}: the real actuator's env file or restarts changed"
    else:
        # The owner may lose its own standing (the producer failed over, a claim demoted at a
        # higher epoch); the producer changes only away from it, and never to it.
        assert view.producer == before.producer or before.producer == owner, f"{what}: {world.describe()}"
        assert view.producer != owner or before.producer == owner, f"{what}: {world.describe()}"
        if owner != "bp2" and before.producer != "bp2":
            assert world.env() == before.env, f"{what}: the real actuator's env file or restarts changed"
    if view.transition is None and view.producer is not None:
        producers = [n for n in world.nodes if world.applied_role(n)[0] == "producer"]
        assert producers in ([], [view.producer]), f"{what}: producers {producers}: {world.describe()}"


def heal(world: World) -> None:
    """After a batch: the publishers restart (a new boot id) and every actuator reports again."""
    for node in world.nodes.values():
        node.tips.reboot()
        if node.act:
            node.report()


def credential_ids() -> list[str]:
    """Every user of a bundle as tests/brokers.py writes it, and the test admin (any writer)."""
    import tempfile
    from pathlib import Path

    from bpfailover.broker.bundle import write_bundle

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "b"
        write_bundle(root, pool="pool1", nodes=["bp1", "bp2", "bp3"], broker_host="127.0.0.1",
                     broker_port=8883, prefix="bpfailover", deciders=2)
        from tests.brokers import BrokerHandle

        handle = BrokerHandle(root, host="127.0.0.1", port=8883, pool="pool1", prefix="bpfailover",
                              nodes=["bp1", "bp2", "bp3"], admin_password="x")
        return [*sorted(bundle_users(handle)), ADMIN_USER]


CREDENTIALS = credential_ids()


@pytest.mark.parametrize("user", CREDENTIALS)
def test_every_message_type_on_every_topic_with_each_credential(
    world: World, ctx: Context, user: str
) -> None:
    owner = owner_of(user, world.broker.nodes)
    delivered = 0
    # Mostly the topics this user may write (the rest probes the broker's ACL).
    grants = writable(world.broker, user)
    mine = [
        (kind, node) for kind, node in ctx.topic_names()
        if user == ADMIN_USER or any(topic_matches_sub(g, ctx.topic(kind, node)) for g in grants)
    ]
    anywhere = hostile_message(ctx)
    own = hostile_message(ctx, mine) if mine else anywhere
    messages = st.one_of(own, own, anywhere)

    @EXAMPLES
    @given(BATCH(messages, min_size=30, max_size=60))
    def batch(messages: list[tuple[str, bytes, bool]]) -> None:
        nonlocal delivered
        before = mark(world)
        taken = world.publisher(user).send(messages)
        world.sync()
        expected = sum(
            1 for (topic, payload, retain), ok in zip(messages, taken, strict=True)
            if ok and must_reject(world, topic, payload, retain)
        )
        delivered += sum(taken)
        got = world.service.rejections.total() - before.rejections
        assert got >= expected, f"{user}: {got} rejections counted, {expected} expected"
        impersonates = user == ADMIN_USER  # writes every node's topics: every node's standing
        assert_pool_intact(world, before, owner if not impersonates else before.producer, user)
        heal(world)

    batch()
    if os.environ.get("BPF_HOSTILE_STATS"):
        print(f"\n{user}: {delivered} taken; decider rejections {dict(world.service.rejections.counts)}")
    assert delivered > 0 or owner is None, f"{user}: the broker took nothing from a node's own user"
    old, new = world.fail_over()
    assert old != new


# --- the known cases ----------------------------------------------------------------------------


def test_a_4300_digit_epoch_in_a_node_state_is_refused(world: World) -> None:
    before = mark(world)
    standby = next(n for n in ("bp3", "bp1", "bp2") if n != before.producer)
    epoch = "1" + "0" * 4300
    body = (
        f'{{"v":1,"pool":"pool1","node":"{standby}","boot":"x","online":true,"role":"producer",'
        f'"epoch":{epoch},"fence_after":1,"updated_at":{time.time():f}}}'
    )
    state = world.topics.state(world.pool, standby)
    ok = world.publisher(f"{standby}-actuator").send([(state, body.encode(), False)])
    assert ok == [True]
    world.sync()
    assert world.service.rejections.counts["schema"] >= 1
    assert_pool_intact(world, before, None, "4300-digit epoch")
    world.fail_over()


def test_a_producer_sending_invalid_and_future_tips_is_still_failed_over(world: World) -> None:
    """Junk tips from the producer's own credentials never count as fresh: when its real tip
    stalls, it is failed over on time."""
    before = mark(world)
    producer = before.producer
    node = world.nodes[producer]
    topic = world.topics.tip(world.pool, producer)
    now = time.time()

    def tips(seq: int) -> list[tuple[str, bytes, bool]]:
        base = {"v": 1, "pool": world.pool, "node": producer, "boot": node.tips.boot, "ok": True}
        at = time.time()
        bodies = [
            {**base, "seq": seq, "sent_at": at, "tip_time": "__Infinity__"},
            {**base, "seq": seq + 1, "sent_at": at, "tip_time": "__NaN__"},
            {**base, "seq": seq + 2, "sent_at": at, "tip_time": at + 365 * 86400},
            {**base, "seq": seq + 3, "sent_at": at + 365 * 86400, "tip_time": at},
            {**base, "seq": seq + 4, "sent_at": at, "tip_time": 1e300},
            {**base, "seq": seq + 5, "sent_at": at, "tip_time": at, "ok": "true"},
            {**base, "seq": seq + 6, "sent_at": at, "tip_time": at + 3600},
        ]
        out = []
        for body in bodies:
            text = json.dumps(body).replace('"__Infinity__"', "Infinity").replace('"__NaN__"', "NaN")
            out.append((topic, text.encode(), True))
        return out

    node.tips.stalled_at = now - 0.05  # the real tip stalls now
    try:
        seq = 10**6
        deadline = time.monotonic() + 10
        while world.view.producer == producer and time.monotonic() < deadline:
            world.publisher(f"{producer}-publisher").send(tips(seq))
            seq += 10
            time.sleep(0.05)
        took = time.time() - now
        assert world.view.producer != producer, f"not failed over: {world.describe()}"
        assert took < 1.5 + 2.0, f"failover took {took:.1f}s"
    finally:
        node.tips.stalled_at = None
    counts = world.service.rejections.counts
    assert counts["schema"] >= 2 and counts["future"] >= 1, counts
    assert not world.alive()
    wait_for(world.settled, 10, "the failover to complete")
    heal(world)


def _answer(world: World, request_id: str, since: int) -> Any:
    from bpfailover.protocol.wire import DecisionEvent

    def find() -> Any:
        for topic, payload in world.observer.seen[since:]:
            if topic.endswith("/events"):
                event = DecisionEvent.model_validate_json(payload)
                if event.request_id == request_id and event.kind == "control":
                    return event
        return None

    return wait_for(find, 5, f"the answer to {request_id}")


def test_forged_failover_force_is_refused_unsigned_foreign_replayed_or_stale(world: World) -> None:
    before = mark(world)
    target = next(n for n in world.nodes if n != before.producer)
    operator = load_signing_key(world.broker.bundle / "keys" / "operator-signing.key")
    control = world.topics.control(world.pool)

    def force(request_id: str, **extra: Any) -> ControlRequest:
        return ControlRequest(
            request_id=request_id, pool=world.pool, action="failover", to=target, force=True,
            sent_at=time.time(), **extra,
        )

    genuine = world.broker.control(request_id="genuine-resume", action="resume")
    forged = [
        ("unsigned", force("forged-unsigned")),
        ("foreign key", sign(force("forged-foreign"), generate_key())),
        ("stale", sign(force("forged-stale").model_copy(update={"sent_at": time.time() - 3600}), operator)),
        ("future", sign(force("forged-future").model_copy(update={"sent_at": time.time() + 3600}), operator)),
        ("signature moved", force("forged-moved").model_copy(update={"sig": genuine.sig})),
        ("no pool", sign(force("forged-nopool").model_copy(update={"pool": None}), operator)),
    ]
    for user in ("operator", ADMIN_USER):
        seen = len(world.observer.seen)
        # Unsigned ones get a fresh id per user; signed ones are the same bytes (the admin's: replays).
        batch = [
            m.model_copy(update={"request_id": f"{m.request_id}-{user}"}) if m.sig is None else m
            for _, m in forged
        ]
        world.publisher(user).send([(control, m.to_json(), False) for m in batch])
        for why, message in forged:
            request_id = message.request_id if message.sig is not None else f"{message.request_id}-{user}"
            answer = _answer(world, request_id, seen)
            assert answer.ok is False, f"{why} by {user}: {answer.reason}"
        # Signed requests are the same bytes for both users: the admin's copies were replays.
    seen = len(world.observer.seen)
    world.publisher("operator").send([(control, genuine.to_json(), False)])
    assert _answer(world, "genuine-resume", seen).ok is True
    seen = len(world.observer.seen)
    world.publisher(ADMIN_USER).send([(control, genuine.to_json(), False)])  # replayed
    replay = _answer(world, "genuine-resume", seen)
    assert replay.ok is False and "seen before" in replay.reason
    assert_pool_intact(world, before, None, "forged failover --force")
    world.fail_over()


def test_control_requests_with_until_nan_or_1e300_are_refused_even_signed(world: World) -> None:
    before = mark(world)
    operator = load_signing_key(world.broker.bundle / "keys" / "operator-signing.key")
    control = world.topics.control(world.pool)
    messages = []
    for i, until in enumerate(["NaN", "Infinity", "1e300", "-1", "1" + "0" * 4300]):
        for action in ("pause", "maintenance"):
            body = {
                "action": action, "enabled": True, "force": False,
                "node": "bp3" if action == "maintenance" else None,
                "pool": world.pool, "request_id": f"until-{action}-{i}", "requested_by": "operator",
                "sent_at": time.time(), "to": None, "until": "__U__", "v": 1,
            }
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).replace('"__U__"', until)
            sig = base64.b64encode(operator.sign(canonical.encode())).decode()
            messages.append((control, (canonical[:-1] + f',"sig":"{sig}"}}').encode(), False))
    counts = world.service.rejections.counts
    refused_before = counts["schema"] + counts["malformed"]
    world.publisher("operator").send(messages)
    world.sync()
    # (The 4,301-digit number is beyond what the JSON parser takes: malformed, not schema.)
    assert counts["schema"] + counts["malformed"] - refused_before == len(messages), counts
    assert_pool_intact(world, before, None, "until NaN/1e300")
    world.fail_over()


def test_a_standby_claiming_producer_at_a_huge_epoch_is_not_believed(world: World) -> None:
    """Its own credentials, no valid signed command: the decider neither adopts the epoch nor
    the producer; it demotes the claim at its own next epoch, and fails over normally."""
    before = mark(world)
    standby = next(n for n in ("bp3", "bp1") if n != before.producer)
    claims = []
    for command in (None, "unsigned", "foreign"):
        state: dict[str, Any] = {
            "v": 1, "pool": world.pool, "node": standby, "boot": "hostile", "online": True,
            "role": "producer", "epoch": 2**53, "fence_after": 1.0, "updated_at": time.time(),
        }
        if command is not None:
            cmd = RoleCommand(pool=world.pool, node=standby, role="producer", epoch=2**53,
                              issued_at=time.time(), decider="decider")
            if command == "foreign":
                cmd = sign(cmd, generate_key())
            state["command"] = json.loads(cmd.to_json())
        claims.append((world.topics.state(world.pool, standby), json.dumps(state).encode(), True))
    world.publisher(f"{standby}-actuator").send(claims)
    world.sync()
    # The honest actuator reports again (here at once) and acknowledges the demotion.
    world.nodes[standby].report()
    wait_for(world.settled, 10, f"the pool to settle again: {world.describe()}")
    view = world.view
    assert view.producer == before.producer
    assert view.epoch < 1000, f"the forged epoch was adopted: {world.describe()}"
    assert not world.alive()
    world.fail_over()


def test_forged_decider_status_frozen_or_paused_does_not_count_even_after_a_restart(world: World) -> None:
    """An unsigned (or foreign-signed) retained status saying frozen, paused and every node in
    maintenance, written with the standby decider's broker user: refused live, and a decider
    that restarts and recovers from the retained status is not switched off by it."""
    before = mark(world)
    forged = DeciderStatus(
        pool=world.pool, decider="decider", online=True, epoch=before.epoch, producer=before.producer,
        paused=True, paused_until=time.time() + 10**6, frozen=True, updated_at=time.time(),
        maintenance={n: None for n in world.nodes}, mode="active", instance="forged",
    )
    topic = world.topics.decider(world.pool)
    for user, message in (("decider-2", forged), (ADMIN_USER, sign(forged, generate_key()))):
        if user not in CREDENTIALS:
            continue
        counts = dict(world.service.rejections.counts)
        assert world.publisher(user).send([(topic, message.to_json(), True)]) == [True]
        world.sync()
        assert sum(world.service.rejections.counts.values()) > sum(counts.values()) + 1
    assert_pool_intact(world, before, None, "forged status")
    world.restart_decider()
    wait_for(world.settled, 15, f"the restarted decider to recover: {world.describe()}")
    view = world.view
    assert not view.paused and not view.frozen and not view.maintenance, world.describe()
    assert (view.producer, view.epoch) == (before.producer, before.epoch)
    world.fail_over()


def test_a_relay_acknowledgement_forged_with_a_nodes_publisher_credentials(world: World) -> None:
    """The producer's publisher user (its password is readable by the account that runs
    cardano-node) claims the node went relay at the next epoch, the acknowledgement a switchover
    waits for, or that its actuator went offline, which starts the fence wait. Either would let
    the decider promote a standby while the producer still forges. The broker refuses both:
    that user may write the node's tip only."""
    before = mark(world)
    producer = before.producer
    user = f"{producer}-publisher"
    assert user in CREDENTIALS
    topic = world.topics.state(world.pool, producer)
    ack = NodeState(
        pool=world.pool, node=producer, boot="hostile", online=True, role="relay", epoch=before.epoch + 1,
        fence_after=1.0, updated_at=time.time(),
    )
    gone = ack.model_copy(update={"online": False, "epoch": before.epoch})
    assert world.publisher(user).send([(topic, ack.to_json(), True), (topic, gone.to_json(), True)]) == [
        False,
        False,
    ]
    world.sync()
    retained = world.broker.retained(topic).get(topic)
    assert retained is not None and NodeState.model_validate_json(retained).boot != "hostile"
    assert_pool_intact(world, before, None, "relay acknowledgement forged by the publisher user")
    world.fail_over()


@pytest.fixture
def persistent_claim(world: World) -> Iterator[Any]:
    """A standby's credentials keep claiming its node produces (every 50 ms), and its own actuator
    is silent: the attacker is the only voice of that node. (With the node's credentials an
    attacker can silence the real actuator: its MQTT client id is predictable,
    ``bpf-actuator-<pool>-<node>``, and connecting under it takes the session over.)"""
    import threading

    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(node: str, **fields: Any) -> None:
        world.nodes[node].muted = True

        def run() -> None:
            while not stop.is_set():
                state = NodeState(
                    pool=world.pool, node=node, boot="hostile", online=True, epoch=0, fence_after=1.0,
                    updated_at=time.time(), **fields,
                )
                topic = world.topics.state(world.pool, node)
                world.publisher(f"{node}-actuator").send([(topic, state.to_json(), True)])
                stop.wait(0.05)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(2)
    for node in world.nodes.values():
        node.muted = False
        if node.act:
            node.report()
    wait_for(world.settled, 15, f"the pool to settle after the claims stop: {world.describe()}")


@pytest.mark.parametrize(
    "claim", [{"role": "unknown"}, {"role": "producer"}, {"role": "relay", "pending": "producer"}]
)
def test_a_node_claiming_it_may_forge_holds_a_failover_until_the_operator_forces_it(
    world: World, persistent_claim: Any, claim: dict[str, Any]
) -> None:
    """S outranks: a node whose actuator says it is, or may be, forging and never acknowledges
    relay holds a promotion (a real actuator whose demotion failed says exactly this, and a
    replayed genuine signed command makes a forgery look the same). It takes that node's actuator
    credentials, which after the split by duty only root on that node holds (with the forging
    keys). The decider says so, and the operator's forced failover is the way out."""
    before = mark(world)
    standby = next(n for n in ("bp3", "bp1") if n != before.producer)
    persistent_claim(standby, **claim)
    old = world.view.producer
    world.nodes[old].tips.stalled_at = time.time() - 0.05
    try:
        wait_for(
            lambda: any(k.startswith("waiting:") for k in world.view.alerts),
            20,
            f"the decider to say what it waits for: {world.describe()}",
        )
        assert world.view.producer in (old, None) or world.view.producer == standby

        def eligible() -> str | None:
            view = world.view
            return next(
                (
                    n
                    for n, v in view.nodes.items()
                    if n not in (standby, view.producer, old)
                    and v.fresh_streak >= 2
                    and v.age(now_pair()) < 1
                ),
                None,
            )

        target = wait_for(eligible, 15, f"an eligible node to force: {world.describe()}")
        request_id = f"force-{standby}-{time.monotonic_ns()}"
        request = world.broker.control(request_id=request_id, action="failover", to=target, force=True)
        world.broker.publish(world.topics.control(world.pool), request.to_json())
        wait_for(lambda: world.view.producer == target, 20, f"the forced failover: {world.describe()}")
    finally:
        world.nodes[old].tips.stalled_at = None
