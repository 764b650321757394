"""The tests' Docker broker (``BPF_TEST_BROKER=docker``): compose.yaml's broker image, run
from the bundle's own configuration. Every other broker test then runs against it unchanged
(TLS, passwords, ACLs); these tests make sure it is really that container."""

from __future__ import annotations

import pytest

from tests.brokers import BrokerHandle, MosquittoContainer, docker_image


@pytest.fixture
def container_broker(broker: BrokerHandle) -> MosquittoContainer:
    if not isinstance(broker, MosquittoContainer):
        pytest.skip(f"only with BPF_TEST_BROKER=docker (this run: {broker.kind})")
    return broker


def test_docker_broker_runs_the_compose_broker_image(container_broker: MosquittoContainer) -> None:
    attrs = container_broker.inspect()
    assert attrs["State"]["Running"]
    assert attrs["Config"]["Image"] == docker_image()


def test_docker_broker_runs_the_bundle_config_mounted_at_its_own_path(
    container_broker: MosquittoContainer,
) -> None:
    attrs = container_broker.inspect()
    assert attrs["Config"]["Cmd"] == ["mosquitto", "-c", str(container_broker.conf)]
    assert container_broker.conf.parent == container_broker.bundle / "broker"
    mounts = {m["Source"]: m["Destination"] for m in attrs["Mounts"]}
    assert mounts == {str(container_broker.bundle): str(container_broker.bundle)}
    port = f"{container_broker.port}/tcp"
    assert attrs["NetworkSettings"]["Ports"][port][0]["HostPort"] == str(container_broker.port)
