"""The wire contract: strict models, size limit, topic identity."""

from __future__ import annotations

import json

import pytest

from bpfailover.protocol.wire import (
    MAX_PAYLOAD,
    ControlRequest,
    DecisionEvent,
    NodeState,
    PayloadRejected,
    RoleCommand,
    TipReport,
    decode,
)


def tip(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "v": 1,
        "pool": "pool1",
        "node": "bp1",
        "boot": "b0",
        "seq": 3,
        "sent_at": 1700000000.5,
        "ok": True,
        "slot": 108000000,
        "block": 10000000,
        "epoch": 500,
        "hash": "ab" * 32,
        "tip_time": 1699566291.0,
        "network": "mainnet",
        "source": "cardano-cli",
    }
    body.update(over)
    return body


def raw(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


def test_valid_tip_report_round_trips() -> None:
    report = decode(TipReport, raw(tip()), pool="pool1", node="bp1")
    assert report.slot == 108000000
    assert decode(TipReport, report.to_json(), pool="pool1", node="bp1") == report


def test_malformed_json_is_rejected_as_malformed() -> None:
    with pytest.raises(PayloadRejected) as err:
        decode(TipReport, b"{not json", pool="pool1", node="bp1")
    assert err.value.reason == "malformed"


def test_oversized_payload_is_rejected_before_parsing() -> None:
    body = tip(error="x" * 100)
    payload = raw(body) + b" " * (MAX_PAYLOAD + 1)
    with pytest.raises(PayloadRejected) as err:
        decode(TipReport, payload, pool="pool1", node="bp1")
    assert err.value.reason == "oversized"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"surprise": 1}, "surprise"),  # unknown field
        ({"slot": "123"}, "slot"),  # strict: no string-to-int coercion
        ({"v": 2}, "v"),  # future wire version
        ({"seq": -1}, "seq"),
    ],
)
def test_wrong_schema_is_rejected_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(PayloadRejected) as err:
        decode(TipReport, raw(tip(**change)), pool="pool1", node="bp1")
    assert err.value.reason == "schema"
    assert field in err.value.detail


def test_missing_field_is_a_schema_rejection() -> None:
    body = tip()
    del body["boot"]
    with pytest.raises(PayloadRejected) as err:
        decode(TipReport, raw(body), pool="pool1", node="bp1")
    assert err.value.reason == "schema"


@pytest.mark.parametrize(("pool", "node"), [("pool2", "bp1"), ("pool1", "bp2")])
def test_payload_identity_must_match_topic(pool: str, node: str) -> None:
    with pytest.raises(PayloadRejected) as err:
        decode(TipReport, raw(tip()), pool=pool, node=node)
    assert err.value.reason == "topic_mismatch"


def test_invalid_node_name_in_payload_is_rejected() -> None:
    with pytest.raises(PayloadRejected) as err:
        decode(TipReport, raw(tip(node="BP/1")))
    assert err.value.reason == "schema"


def test_role_command_accepts_only_producer_or_relay() -> None:
    body = {"pool": "pool1", "node": "bp1", "role": "leader", "epoch": 1, "issued_at": 1.0, "decider": "d1"}
    with pytest.raises(PayloadRejected):
        decode(RoleCommand, raw(body), pool="pool1", node="bp1")


def test_node_state_and_control_and_event_models_parse() -> None:
    state = NodeState(
        pool="pool1",
        node="bp2",
        boot="x",
        online=False,
        role="relay",
        epoch=4,
        fence_after=120.0,
        updated_at=5.0,
    )
    assert decode(NodeState, state.to_json(), pool="pool1", node="bp2").epoch == 4
    req = ControlRequest(request_id="r1", action="switchover", to="bp2")
    assert decode(ControlRequest, req.to_json(), pool="pool1").to == "bp2"
    event = DecisionEvent(pool="pool1", at=1.0, kind="failover", **{"from": "bp1"}, to="bp2", epoch=2)
    data = json.loads(event.to_json())
    assert data["from"] == "bp1"  # the wire name is "from", not "from_"
    assert decode(DecisionEvent, event.to_json(), pool="pool1").from_ == "bp1"


def test_control_request_for_another_pool_is_rejected() -> None:
    req = ControlRequest(request_id="r1", action="pause", pool="pool2")
    with pytest.raises(PayloadRejected) as err:
        decode(ControlRequest, req.to_json(), pool="pool1")
    assert err.value.reason == "topic_mismatch"


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("tip_time", b"Infinity"),
        ("tip_time", b"-Infinity"),
        ("tip_time", b"NaN"),
        ("tip_time", b"1e300"),
        ("sent_at", b"1e300"),
        ("slot", b"9" * 4300),
        ("seq", str(2**53 + 1).encode()),
        ("block", b"-1"),
    ],
)
def test_numbers_are_finite_and_bounded(field: str, raw: bytes) -> None:
    body = json.dumps(tip(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {raw.decode()}')
    with pytest.raises(PayloadRejected) as info:
        decode(TipReport, body.encode(), pool="pool1", node="bp1")
    assert info.value.reason == "schema"
    assert field in info.value.detail


def test_an_enormous_epoch_in_a_node_state_is_refused() -> None:
    body = (
        b'{"v":1,"pool":"pool1","node":"bp1","boot":"b","online":true,"role":"producer","epoch":'
        + b"9" * 4300
        + b',"fence_after":1,"updated_at":1}'
    )
    with pytest.raises(PayloadRejected, match="epoch"):
        decode(NodeState, body, pool="pool1", node="bp1")


@pytest.mark.parametrize("until", ["NaN", "Infinity", "1e300"])
def test_a_control_request_with_an_absurd_until_is_refused(until: str) -> None:
    body = f'{{"v":1,"request_id":"r1","action":"pause","until":{until}}}'.encode()
    with pytest.raises(PayloadRejected, match="until"):
        decode(ControlRequest, body)
