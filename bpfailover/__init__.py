"""bpfailover: automatic, split-brain-safe failover for Cardano block producers over MQTT.

This shared package holds what crosses the wire (messages, topics, signing), the
MQTT link, the settings and the command line. The components live beside it in
``publisher``, ``decider``, ``actuator`` and ``broker``.
"""

__version__ = "0.1.0"
