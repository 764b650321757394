"""The TOML configurations in a bundle: decider, operator and one per node.

Paths are relative to the file's own folder (``bpfailover.settings`` resolves them
that way), so the bundle can be moved as a whole. The node files run locally as
written: a simulated tip source and an env swap inside ``run/<node>/``; comments
show the values a real Cardano node uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PRODUCTION_SOCKET = "/opt/cardano/cnode/sockets/node.socket"
PRODUCTION_ENV = "/opt/cardano/cnode/scripts/env"


def toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \\uXXXX included).
    return json.dumps(value)


@dataclass(frozen=True)
class MqttAccess:
    """What a client needs to reach the broker as one user."""

    host: str
    port: int
    prefix: str
    ca_file: str
    username: str
    password: str


def mqtt_section(access: MqttAccess) -> str:
    return f"""\
[mqtt]
host = {toml_str(access.host)}
port = {access.port}
tls = true
ca_file = {toml_str(access.ca_file)}
username = {toml_str(access.username)}
password = {toml_str(access.password)}
protocol = "5"
keepalive = 30
prefix = {toml_str(access.prefix)}
"""


def pools_section(pool: str, nodes: list[tuple[str, int]]) -> str:
    entries = ",\n".join(
        f"    {{ name = {toml_str(name)}, priority = {priority} }}" for name, priority in nodes
    )
    return f"""\
[[pools]]
id = {toml_str(pool)}
initial_producer = {toml_str(nodes[0][0])}
nodes = [
{entries},
]
"""


def render_decider(
    access: MqttAccess,
    pool: str,
    nodes: list[tuple[str, int]],
    *,
    decider_id: str | None = None,
    standby: bool = False,
    operator_key: str | None = None,
) -> str:
    name = f"{decider_id}.toml" if decider_id else "decider.toml"
    op_line = ""
    if operator_key:
        op_line = f"operator_key = {toml_str(operator_key)}  # control requests must be signed with its key\n"
    two = ""
    if standby:
        two = f"""\
id = {toml_str(decider_id or "decider")}
standby = true               # defers while the decider of decider.toml is alive
takeover_delay = "1m"        # after its Will, before this one takes over
"""
    return f"""\
# bpfailover decider for pool {pool}: bpfailover decider -c {name}
# Relative paths are resolved against this file's folder.

{mqtt_section(access)}
[decider]
{two}stale_after = "5m"           # producer's tip older than this: failover candidate
tick = 1                     # seconds between evaluations (also on every message)
rise = 2                     # consecutive fresh reports before a node is eligible
min_switch_interval = "5m"
max_failovers = 3            # per flap_window; then the pool freezes and alerts
flap_window = "1h"
startup_grace = 30           # seconds of collecting reports before acting
max_clock_skew = 10
apply_timeout = "2m"
dry_run = false              # true: publish decisions on the dryrun topics only
signing_key = "keys/command-signing.key"
{op_line}
# Nodes in order of preference; the first one starts as producer.
{pools_section(pool, nodes)}"""


def render_operator(access: MqttAccess, pool: str, nodes: list[tuple[str, int]]) -> str:
    return f"""\
# bpfailover operator commands for pool {pool}, e.g.
#   bpfailover status -c operator.toml
#   bpfailover switchover -c operator.toml --to {nodes[-1][0]}

{mqtt_section(access)}
[pool]
id = {toml_str(pool)}

[operator]
signing_key = "keys/operator-signing.key"   # signs control requests (keep it with you)

{pools_section(pool, nodes)}"""


def render_node(access: MqttAccess, pool: str, node: str, priority: int, verify_key: str) -> str:
    run = f"../run/{node}"
    return f"""\
# bpfailover on node {node} of pool {pool}: one file for both services,
#   bpfailover publisher -c {node}.toml
#   bpfailover actuator -c {node}.toml
# As written it runs locally with a simulated chain tip and sample env files in
# {run}/. The commented lines show the values for a guild-operators cnode.
# Relative paths are resolved against this file's folder.

{mqtt_section(access)}
[pool]
id = {toml_str(pool)}

[node]
name = {toml_str(node)}
priority = {priority}

[publisher]
source = "simulate"
# source = "cardano-cli"
# socket_path = {toml_str(PRODUCTION_SOCKET)}
network = "mainnet"
interval = 10
stall_file = {toml_str(f"{run}/stall")}  # simulate: the tip freezes while this file exists

[actuator]
method = "env-swap"
env_file = {toml_str(f"{run}/env")}
# env_file = {toml_str(PRODUCTION_ENV)}
producer_env = {toml_str(f"{run}/env.producer")}
relay_env = {toml_str(f"{run}/env.relay")}
restart_command = "true"
# restart_command = "systemctl restart cnode"
stop_command = "true"
# stop_command = "systemctl stop cnode"
state_dir = {toml_str(f"{run}/state")}
# state_dir = "/var/lib/bpfailover"
fence_after = 120            # seconds cut off from the broker before a producer demotes itself
apply_timeout = 45
verify_key = {toml_str(verify_key)}  # the decider's command-signing public key
"""


def render_env(pool: str, node: str, producer: bool) -> str:
    """A guild-operators style ``scripts/env`` sample; only POOL_NAME differs between roles."""
    role = "producer" if producer else "relay"
    pool_line = f'POOL_NAME="{pool}"' if producer else '#POOL_NAME=""'
    why = (
        "POOL_NAME set: cnode.sh starts the node with the pool's KES key, VRF key and opcert"
        if producer
        else "POOL_NAME unset: cnode.sh starts the node as a relay, without forging keys"
    )
    return f"""\
# Sample {role} variant of guild-operators' scripts/env for node {node}.
# The actuator copies the variant for the commanded role over env and restarts cnode.
#CNODE_HOME="/opt/cardano/cnode"
#CNODE_PORT=6000
#CONFIG="${{CNODE_HOME}}/files/config.json"
#SOCKET="${{CNODE_HOME}}/sockets/node.socket"
#TOPOLOGY="${{CNODE_HOME}}/files/topology.json"
# {why}
{pool_line}
"""
