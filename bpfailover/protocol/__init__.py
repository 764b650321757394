"""The contract the components share: what crosses the wire and what it promises.

- ``topics``: the topic layout, pool ids and node names (DESIGN §3);
- ``wire``: the JSON messages and ``decode``, the one entry point for bytes (DESIGN §4);
- ``signing``: Ed25519 signatures over role commands, control requests and statuses;
- ``fence``: the fence-promise formula, what an actuator's ``NodeState.fence_after`` means.

Nothing here imports a component, the settings or the MQTT link: the publisher, the
decider, the actuator and the broker bundle all read the contract from here.
"""
