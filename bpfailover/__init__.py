"""bpfailover: automatic, split-brain-safe failover for Cardano block producers over MQTT.

The one installed package. Its layers, from the bottom (imports run only downward):

- ``bpfailover.protocol``: the contract the components share (topics, wire models,
  signing, the fence-promise formula);
- the shared runtime in this folder: ``settings``, ``link`` (the MQTT link), ``logs``, ``node_metrics``,
  ``durations``, ``rejections``;
- the components, installed from their own top-level folders: ``bpfailover.publisher``,
  ``bpfailover.decider``, ``bpfailover.actuator``, ``bpfailover.broker``;
- ``bpfailover.cli``: the operator surface (the command line, status, ops, demo,
  config check).
"""

__version__ = "0.1.0"
