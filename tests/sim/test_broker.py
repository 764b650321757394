"""The simulated broker and links themselves: what the whole-system simulation relies on."""

from __future__ import annotations

from collections.abc import Callable

from tests.sim.net import Broker, Client, Link, Loop, matches


class Proc:
    incarnation = 1

    def run(self, fn: Callable[[], None]) -> None:
        fn()


class Recorder:
    def __init__(self) -> None:
        self.connected: list[str] = []
        self.lost: list[str] = []
        self.messages: list[tuple[str, bytes, bool]] = []

    def on_connected(self, client: Client, conn_id: str) -> None:
        self.connected.append(conn_id)

    def on_disconnected(self, client: Client, why: str) -> None:
        self.lost.append(why)

    def on_subscribed(self, client: Client) -> None:
        pass

    def on_message(self, client: Client, topic: str, payload: bytes, retain: bool) -> None:
        self.messages.append((topic, payload, retain))


def setup(
    will: bytes | None = b"offline", subs: list[str] | None = None
) -> tuple[Loop, Broker, Link, Client, Recorder]:
    loop = Loop(1)
    broker = Broker(loop)
    link = Link(loop, "a")
    rec = Recorder()
    client = Client(
        loop,
        broker,
        link,
        Proc(),
        "actuator-a",
        rec,
        keepalive=2.0,
        contact_clock=lambda: loop.now,
        subscriptions=subs or [],
        will=(lambda conn: ("p/state/a", will)) if will is not None else None,
    )
    client.start()
    loop.run_until(1.0)
    return loop, broker, link, client, rec


def watcher(loop: Loop, broker: Broker, topic: str = "p/#") -> Recorder:
    rec = Recorder()
    c = Client(
        loop,
        broker,
        Link(loop, "w"),
        Proc(),
        "watcher",
        rec,
        keepalive=60.0,
        contact_clock=lambda: loop.now,
        subscriptions=[topic],
    )
    c.start()
    loop.run_until(loop.now + 1.0)
    return rec


def test_topic_filters_match_like_mqtt() -> None:
    assert matches("p/+/tip/+", "p/pool1/tip/bp1")
    assert not matches("p/+/tip/+", "p/pool1/state/bp1")
    assert matches("p/#", "p/pool1/role/bp1")
    assert not matches("p/pool1/role/bp1", "p/pool1/role/bp2")


def test_rollback_brings_back_an_older_retained_copy() -> None:
    loop, broker, _link, client, _rec = setup()
    client.publish("p/role/a", b"epoch1", retain=True)
    loop.run_until(10.0)
    client.publish("p/role/a", b"epoch2", retain=True)
    loop.run_until(20.0)
    assert broker.retained["p/role/a"] == b"epoch2"
    broker.crash()
    broker.restart(broker.snapshot_before(12.0), "rollback")
    assert broker.retained["p/role/a"] == b"epoch1"
    broker.crash()
    broker.restart({}, "amnesia")
    assert broker.retained == {}


def test_a_subscriber_gets_the_retained_copy_flagged_retained() -> None:
    loop, broker, _link, client, _rec = setup()
    client.publish("p/role/a", b"cmd", retain=True)
    loop.run_until(2.0)
    rec = watcher(loop, broker, "p/role/a")
    assert rec.messages == [("p/role/a", b"cmd", True)]


def test_will_after_one_and_a_half_keepalives_of_silence() -> None:
    loop, broker, link, _client, _rec = setup()
    seen = watcher(loop, broker, "p/state/a")
    link.mode = "down"
    cut = loop.now
    loop.run_until(cut + 2.9)
    assert seen.messages == []
    loop.run_until(cut + 4.0)
    assert seen.messages == [("p/state/a", b"offline", False)]
    assert broker.retained["p/state/a"] == b"offline"


def test_will_at_once_on_a_closed_connection_and_never_on_a_clean_disconnect() -> None:
    loop, broker, _link, client, _rec = setup()
    seen = watcher(loop, broker, "p/state/a")
    client.killed()
    loop.run_until(loop.now + 0.1)
    assert [m[1] for m in seen.messages] == [b"offline"]

    loop, broker, _link, client, _rec = setup()
    seen = watcher(loop, broker, "p/state/a")
    client.stop_clean()
    loop.run_until(loop.now + 10.0)
    assert seen.messages == []


def test_each_connection_has_its_own_will_and_id() -> None:
    loop, broker, link, _client, rec = setup()
    link.mode = "down"
    loop.run_until(loop.now + 8.0)
    link.mode = "up"
    loop.run_until(loop.now + 20.0)
    assert len(rec.connected) == 2 and rec.connected[0] != rec.connected[1]
    assert broker.conns["actuator-a"].conn_id == rec.connected[1]


def test_one_way_loss_connects_but_loses_publishes_and_the_connection_flaps() -> None:
    loop, broker, link, client, rec = setup()
    link.mode = "lossy"
    loop.run_until(loop.now + 10.0)  # pings pass: the idle connection lives on
    pub = client.publish("p/state/a", b"online", retain=True)
    loop.run_until(loop.now + 20.0)
    assert not pub.acked
    assert "p/state/a" not in broker.retained or broker.retained["p/state/a"] == b"offline"
    assert len(rec.connected) >= 2  # CONNECT/CONNACK get through again and again
    assert client.acked_sent_at is None
    link.mode = "up"
    loop.run_until(loop.now + 20.0)
    fresh = client.publish("p/state/a", b"back", retain=True)
    loop.run_until(loop.now + 1.0)
    assert fresh.acked and broker.retained["p/state/a"] == b"back"


def test_a_short_partition_delays_a_live_connection_without_losing_anything() -> None:
    loop, broker, link, _client, rec = setup(subs=["p/role/a"])
    link.mode = "down"
    other = Client(
        loop,
        broker,
        Link(loop, "d"),
        Proc(),
        "decider",
        Recorder(),
        keepalive=60.0,
        contact_clock=lambda: loop.now,
    )
    other.start()
    loop.run_until(loop.now + 0.5)
    other.publish("p/role/a", b"relay@2", retain=True)
    loop.run_until(loop.now + 1.0)
    assert rec.messages == []
    link.mode = "up"
    loop.run_until(loop.now + 0.5)
    assert rec.messages == [("p/role/a", b"relay@2", False)]
    assert len(rec.connected) == 1
