"""Fault-injection suite: real publisher, actuator and decider processes against a real
mosquitto, with a TCP proxy per node, a split-brain checker and compressed timings."""
