"""The MQTT link against a real mosquitto over TLS with passwords and ACLs."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from bpfailover.link import BrokerRefused, Incoming, LinkError, LinkEvent, MqttLink, PublishError
from bpfailover.protocol.signing import SignatureError, generate_key, sign_command, verify_command
from bpfailover.protocol.topics import Topics
from bpfailover.protocol.wire import PayloadRejected, RoleCommand, TipReport, decode
from bpfailover.rejections import Rejections
from tests.brokers import wait_for

pytestmark = pytest.mark.broker


class Collector:
    """Collects messages from a link on a background thread via ``serve``."""

    def __init__(self, link: MqttLink, handler=None) -> None:  # type: ignore[no-untyped-def]
        self.link = link
        self.messages: list[Incoming] = []
        self.events: list[LinkEvent] = []
        self._handler = handler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=link.serve, args=(self._handle, self._stop), daemon=True)
        self._thread.start()

    def _handle(self, item: Incoming | LinkEvent) -> None:
        if isinstance(item, LinkEvent):
            self.events.append(item)
            return
        self.messages.append(item)
        if self._handler is not None:
            self._handler(item)

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def links(broker) -> Iterator[list[MqttLink]]:  # type: ignore[no-untyped-def]
    made: list[MqttLink] = []
    yield made
    for link in made:
        with contextlib.suppress(Exception):
            link.stop()


def connect(broker, links, user: str, subscriptions=(), **over) -> MqttLink:  # type: ignore[no-untyped-def]
    settings = broker.mqtt_settings(user)
    if over:
        settings = settings.model_copy(update=over)
    link = MqttLink(settings, f"test-{user}-{len(links)}-{time.monotonic_ns()}", subscriptions=subscriptions)
    links.append(link)
    link.start(attempts=1)
    return link


def test_node_credentials_connect_over_tls(broker, links) -> None:  # type: ignore[no-untyped-def]
    link = connect(broker, links, "bp1-publisher")
    assert link.connected.is_set()
    topic = Topics(broker.prefix).tip(broker.pool, "bp1")
    link.publish_wait(topic, b"{}", retain=False, timeout=5)  # PUBACK received over TLS


def test_subscriptions_are_acknowledged_before_subscribed_is_set(broker, links) -> None:  # type: ignore[no-untyped-def]
    topics = Topics(broker.prefix)
    link = connect(broker, links, "operator", subscriptions=[topics.events(broker.pool)])
    assert link.subscribed.wait(5)
    link.subscribe(topics.decider(broker.pool))
    assert link.subscribed.wait(5)
    assert link.subscriptions == [topics.events(broker.pool), topics.decider(broker.pool)]


def test_wrong_password_is_refused(broker, links) -> None:  # type: ignore[no-untyped-def]
    settings = broker.mqtt_settings("bp1-publisher")
    settings = settings.model_copy(update={"password": None, "password_file": None})
    settings = settings.model_copy(update={"password": __import__("pydantic").SecretStr("wrong")})
    link = MqttLink(settings, "test-wrong-password")
    with pytest.raises(BrokerRefused) as err:
        link.start(attempts=1)
    assert "refused" in str(err.value)
    assert not link.connected.is_set()


def test_plaintext_connection_to_tls_port_is_refused(broker, links) -> None:  # type: ignore[no-untyped-def]
    settings = broker.mqtt_settings("bp1-publisher").model_copy(update={"tls": False, "connect_timeout": 3.0})
    link = MqttLink(settings, "test-plaintext")
    with pytest.raises(LinkError):
        link.start(attempts=1)
    assert not link.connected.is_set()
    link.stop()


def test_untrusted_certificate_is_refused(broker, links) -> None:  # type: ignore[no-untyped-def]
    # Without the bundle's CA the system store cannot verify the broker's certificate.
    settings = broker.mqtt_settings("bp1-publisher").model_copy(update={"ca_file": None})
    link = MqttLink(settings, "test-untrusted")
    with pytest.raises(BrokerRefused) as err:
        link.start(attempts=1)
    assert "TLS verification" in str(err.value)


def test_acl_stops_publishing_to_another_nodes_tip(broker, links) -> None:  # type: ignore[no-untyped-def]
    topics = Topics(broker.prefix)
    link = connect(broker, links, "bp1-publisher")
    with pytest.raises(PublishError) as err:
        link.publish_wait(topics.tip(broker.pool, "bp2"), b'{"forged": true}', retain=True, timeout=5)
    assert "refused" in str(err.value).lower() or "authori" in str(err.value).lower()
    # And nothing reached bp2's tip topic.
    watcher = connect(broker, links, "admin", subscriptions=[topics.tip(broker.pool, "bp2")])
    marker = topics.tip(broker.pool, "bp3")
    watcher.subscribe(marker)
    admin = connect(broker, links, "admin")
    admin.publish_wait(marker, b"marker", timeout=5)
    seen = Collector(watcher)
    try:
        wait_for(lambda: seen.payloads(marker), 5, "marker message")
        assert seen.payloads(topics.tip(broker.pool, "bp2")) == []
    finally:
        seen.close()


def test_acl_stops_reading_another_nodes_role(broker, links) -> None:  # type: ignore[no-untyped-def]
    topics = Topics(broker.prefix)
    admin = connect(broker, links, "admin")
    other, own = topics.role(broker.pool, "bp2"), topics.role(broker.pool, "bp1")
    admin.publish_wait(other, b"for-bp2-only", retain=True, timeout=5)
    admin.publish_wait(own, b"for-bp1", retain=True, timeout=5)
    try:
        # Subscribe to the forbidden topic first: retained messages arrive in subscription order.
        link = connect(broker, links, "bp1-actuator", subscriptions=[other, own])
        seen = Collector(link)
        wait_for(lambda: seen.payloads(own), 5, "bp1's own retained role")
        assert seen.payloads(other) == []
        seen.close()
    finally:
        admin.publish_wait(other, b"", retain=True, timeout=5)
        admin.publish_wait(own, b"", retain=True, timeout=5)


def test_handler_exception_does_not_stop_later_messages(broker, links) -> None:  # type: ignore[no-untyped-def]
    topic = Topics(broker.prefix).events(broker.pool)
    calls: list[bytes] = []

    def handler(message: Incoming) -> None:
        calls.append(message.payload)
        if message.payload == b"first":
            raise RuntimeError("handler bug")

    link = connect(broker, links, "operator", subscriptions=[topic])
    seen = Collector(link, handler)
    publisher = connect(broker, links, "decider")
    try:
        wait_for(lambda: link.connected.is_set(), 5, "subscriber connected")
        publisher.publish_wait(topic, b"first", timeout=5)
        publisher.publish_wait(topic, b"second", timeout=5)
        wait_for(lambda: b"second" in calls, 5, "second message after the handler raised")
        assert calls == [b"first", b"second"]
    finally:
        seen.close()


def test_bad_payloads_are_rejected_with_a_reason(broker, links) -> None:  # type: ignore[no-untyped-def]
    topics = Topics(broker.prefix)
    topic = topics.tip(broker.pool, "bp1")
    good = TipReport(pool=broker.pool, node="bp1", boot="b", seq=1, sent_at=1.0, ok=True)
    cases = {
        b"{not json": "malformed",
        b'{"v": 1, "pool": "' + b"x" * 9000 + b'"}': "oversized",
        b'{"v": 1, "pool": "pool1", "node": "bp1", "seq": "one"}': "schema",
        good.model_copy(update={"node": "bp2"}).to_json(): "topic_mismatch",
    }
    node = connect(broker, links, "bp1-publisher")
    decider = connect(broker, links, "decider", subscriptions=[topic])
    seen = Collector(decider)
    rejections = Rejections("test", logging.getLogger("test"))
    try:
        wait_for(lambda: decider.connected.is_set(), 5, "decider connected")
        for payload in cases:
            node.publish_wait(topic, payload, timeout=5)
        node.publish_wait(topic, good.to_json(), timeout=5)
        wait_for(lambda: good.to_json() in seen.payloads(topic), 5, "the good report")
        accepted = []
        for payload in seen.payloads(topic):
            parsed = topics.parse(topic)
            try:
                accepted.append(decode(TipReport, payload, pool=parsed.pool, node=parsed.node))
            except PayloadRejected as exc:
                rejections.reject(exc.reason, exc.detail, topic=topic)
        assert accepted == [good]
        assert dict(rejections.counts) == {r: 1 for r in cases.values()}
    finally:
        seen.close()
        node.publish_wait(topic, b"", retain=True, timeout=5)


def test_role_command_signature_checked_across_the_broker(broker, links) -> None:  # type: ignore[no-untyped-def]
    topic = Topics(broker.prefix).role(broker.pool, "bp1")
    key, other = generate_key(), generate_key()
    command = RoleCommand(pool=broker.pool, node="bp1", role="producer", epoch=7, issued_at=1.0, decider="d1")
    node = connect(broker, links, "bp1-actuator", subscriptions=[topic])
    seen = Collector(node)
    decider = connect(broker, links, "decider")
    try:
        for payload in (
            command.to_json(),
            sign_command(command, other).to_json(),
            sign_command(command, key).to_json(),
        ):
            decider.publish_wait(topic, payload, retain=True, timeout=5)
        wait_for(lambda: len(seen.payloads(topic)) >= 3, 5, "three role commands")
        results = []
        for payload in seen.payloads(topic)[-3:]:
            try:
                verify_command(decode(RoleCommand, payload, pool=broker.pool, node="bp1"), key.public_key())
                results.append("ok")
            except SignatureError as exc:
                results.append(exc.reason)
        assert results == ["unsigned", "bad_signature", "ok"]
    finally:
        seen.close()
        decider.publish_wait(topic, b"", retain=True, timeout=5)


def test_retained_role_survives_broker_restart_and_link_resubscribes(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(pool="rs", nodes=["n1", "n2"])
    topics = Topics(b.prefix)
    role = topics.role(b.pool, "n1")
    decider = MqttLink(b.mqtt_settings("decider"), "test-restart-decider")
    decider.start(attempts=1)
    node = MqttLink(b.mqtt_settings("n1-actuator"), "test-restart-n1", subscriptions=[role])
    node.start(attempts=1)
    seen = Collector(node)
    try:
        decider.publish_wait(role, b"epoch-1", retain=True, timeout=5)
        wait_for(lambda: b"epoch-1" in seen.payloads(role), 5, "role before restart")
        b.restart()
        # The node's link reconnects on its own and resubscribes: the retained command comes again.
        wait_for(lambda: seen.payloads(role).count(b"epoch-1") >= 2, 30, "retained role after restart")
        assert any(e.kind == "disconnected" for e in seen.events)
        fresh = MqttLink(b.mqtt_settings("n1-actuator"), "test-restart-fresh", subscriptions=[role])
        fresh.start(attempts=5)
        late = Collector(fresh)
        wait_for(lambda: late.payloads(role) == [b"epoch-1"], 5, "retained role for a new subscriber")
        late.close()
        fresh.stop()
    finally:
        seen.close()
        node.stop()
        decider.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_abort_makes_the_broker_publish_the_last_will(broker, links, protocol: str) -> None:  # type: ignore[no-untyped-def]
    topic = Topics(broker.prefix).state(broker.pool, "bp2")
    watcher = connect(broker, links, "operator", subscriptions=[topic])
    seen = Collector(watcher)
    try:
        assert watcher.subscribed.wait(5)
        settings = broker.mqtt_settings("bp2-actuator").model_copy(update={"protocol": protocol})
        node = MqttLink(settings, f"test-will-{protocol}", will=(topic, b"offline-" + protocol.encode()))
        node.start(attempts=1)
        node.publish_wait(topic, b"online", retain=True, timeout=5)
        node.abort()
        wait_for(lambda: b"offline-" + protocol.encode() in seen.payloads(topic), 10, "the Last Will")
    finally:
        seen.close()
        broker.publish(topic, b"", retain=True)


def test_each_connection_has_its_own_will_naming_it(broker, links) -> None:  # type: ignore[no-untyped-def]
    topic = Topics(broker.prefix).state(broker.pool, "bp2")
    watcher = connect(broker, links, "operator", subscriptions=[topic])
    seen = Collector(watcher)
    settings = broker.mqtt_settings("bp2-actuator")
    node = MqttLink(settings, "test-will-conn", will=lambda conn: (topic, f"offline:{conn}".encode()))
    conns = []
    try:
        assert watcher.subscribed.wait(5)
        for _ in range(2):
            node.start(attempts=1)
            conns.append(node.conn)
            assert node.acked_sent_at is None or node.acked_sent_at < time.monotonic()
            before = node.acked_sent_at
            node.publish_wait(topic, f"online:{node.conn}".encode(), retain=True, timeout=5)
            assert node.acked_sent_at is not None and node.acked_sent_at != before  # a PUBACK: contact
            node.abort()
            wait_for(lambda c=node.conn: f"offline:{c}".encode() in seen.payloads(topic), 10, "its Will")
        assert len(set(conns)) == 2 and all(conns)
    finally:
        seen.close()
        broker.publish(topic, b"", retain=True)


def test_outdated_latest_values_are_not_resent_after_reconnect(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(pool="lv", nodes=["n1"])
    topics = Topics(b.prefix)
    state, tip = topics.state(b.pool, "n1"), topics.tip(b.pool, "n1")
    # The test admin: one link that may write both the state and the tip topic.
    node = MqttLink(b.mqtt_settings("admin", keepalive=5), "test-latest-n1")
    node.start(attempts=1)
    try:
        b.stop()
        wait_for(lambda: not node.connected.is_set(), 15, "the link to notice the broker is gone")
        # Both stay unacknowledged across the outage; only the ordinary one may be resent.
        outdated = node.publish(state, b"outdated-state", retain=True, latest=True)
        kept = node.publish(tip, b"ordinary", retain=True)
        b.start()
        wait_for(lambda: node.connected.is_set(), 30, "the link to reconnect")
        kept.wait(10)
        with pytest.raises(PublishError, match="superseded"):
            outdated.wait(5)
        retained = b.retained(f"{b.prefix}/{b.pool}/#")
        assert retained.get(tip) == b"ordinary"
        assert state not in retained
    finally:
        node.stop()


def test_publishes_in_flight_stay_within_the_brokers_receive_maximum(broker, links) -> None:  # type: ignore[no-untyped-def]
    if broker.protocol != "5":
        pytest.skip("Receive Maximum is MQTT 5")
    wide = MqttLink(broker.mqtt_settings("decider"), f"test-wide-{time.monotonic_ns()}", inflight=500)
    links.append(wide)
    wide.start(attempts=1)
    assert wide._client.max_inflight_messages == 20  # mosquitto's default max_inflight_messages
    narrow = MqttLink(broker.mqtt_settings("decider"), f"test-narrow-{time.monotonic_ns()}", inflight=5)
    links.append(narrow)
    narrow.start(attempts=1)
    assert narrow._client.max_inflight_messages == 5


def test_extra_connections_of_one_service_get_distinct_client_ids(broker, links) -> None:  # type: ignore[no-untyped-def]
    settings = broker.mqtt_settings("decider", client_id="my-decider")
    main, commands = MqttLink(settings, "ignored"), MqttLink(settings, "ignored", suffix="-cmd")
    links.extend([main, commands])
    main.start(attempts=1)
    commands.start(attempts=1)
    assert (main.client_id, commands.client_id) == ("my-decider", "my-decider-cmd")
    # A round trip on each after both connected: a takeover (one client id) would have cut one.
    topic = Topics(broker.prefix).events(broker.pool)
    main.publish_wait(topic, b"{}", timeout=5)
    commands.publish_wait(topic, b"{}", timeout=5)
    events = [main.inbox.get_nowait().kind for _ in range(main.inbox.qsize())]  # type: ignore[union-attr]
    events += [commands.inbox.get_nowait().kind for _ in range(commands.inbox.qsize())]  # type: ignore[union-attr]
    assert events == ["connected", "connected"]


def test_subscriptions_are_cut_into_batches_that_fit_the_brokers_packet_limit() -> None:
    from bpfailover.broker.mosquitto import MAX_PACKET_SIZE
    from bpfailover.link import SUBSCRIBE_BYTES, subscribe_batches

    topics = [f"bpfailover/pool{i:04d}/{kind}/+" for i in range(1000) for kind in ("tip", "state", "role")]
    batches = subscribe_batches(topics)
    assert [t for batch in batches for t in batch] == topics  # all of them, in order
    assert len(batches) > 1
    for batch in batches:
        assert sum(len(t) + 3 for t in batch) <= SUBSCRIBE_BYTES < MAX_PACKET_SIZE - 64
    assert subscribe_batches(["a/b"]) == [["a/b"]] and subscribe_batches([]) == []
