"""Timing invariants: refused at start-up when broken, flagged at run time per node.

At start-up the decider knows its own timings and the broker keepalive:

- ``tick < stale_after``: a stale producer must be noticed before the next report
  could make it fresh again;
- ``apply_timeout >= tick``: a target gets at least one evaluation to apply;
- ``flap_window > max_failovers * min_switch_interval``: otherwise min_switch_interval
  alone caps the rate and the flap budget can never be spent;
- ``status_interval > 0``;
- ``stale_after > fence_after + keepalive + fence_margin`` when the configuration
  also carries the actuators' fence_after (an ``[actuator]`` section).

The actuators' real fence_after arrives in their NodeStates, so the last inequality is
checked again per node at run time. It is not needed for safety — the decider always
waits for the fence before promoting — but when it fails, a producer cut off from the
broker is failed over only ``fence_after + keepalive + margin`` after its Last Will,
later than stale_after; and a node with fence_after 0 can never be certainly fenced.
"""

from __future__ import annotations

from bpfailover.settings import ConfigError, DeciderSettings


def check_invariants(settings: DeciderSettings, keepalive: float, fence_after: float | None = None) -> None:
    """Raise ConfigError naming the first inequality that fails."""
    s = settings
    if s.tick <= 0:
        raise ConfigError(f"decider.tick ({s.tick:g}s) must be greater than 0")
    if not s.tick < s.stale_after:
        raise ConfigError(f"decider.stale_after ({s.stale_after:g}s) must exceed decider.tick ({s.tick:g}s)")
    if s.apply_timeout < s.tick:
        raise ConfigError(
            f"decider.apply_timeout ({s.apply_timeout:g}s) must be at least decider.tick ({s.tick:g}s)"
        )
    if s.flap_window <= s.max_failovers * s.min_switch_interval:
        raise ConfigError(
            f"decider.flap_window ({s.flap_window:g}s) must exceed decider.max_failovers "
            f"({s.max_failovers}) x decider.min_switch_interval ({s.min_switch_interval:g}s), "
            "or the flap budget can never be spent"
        )
    if s.takeover_delay <= 0:
        # A standby must never take over in the same instant as the Will: the lost decider's
        # last commands may still be on their way (the default, 60 s, covers a keepalive).
        raise ConfigError(f"decider.takeover_delay ({s.takeover_delay:g}s) must be greater than 0")
    if s.status_interval <= 0:
        raise ConfigError(f"decider.status_interval ({s.status_interval:g}s) must be greater than 0")
    if fence_after is not None and fence_after > 0:
        total = fence_after + keepalive + s.fence_margin
        if not s.stale_after > total:
            raise ConfigError(
                f"decider.stale_after ({s.stale_after:g}s) must exceed the actuators' fence time "
                f"({fence_after:g}s: max(fence_after, 2 x keepalive) + demotion time) "
                f"+ mqtt.keepalive ({keepalive:g}s) + decider.fence_margin "
                f"({s.fence_margin:g}s) = {total:g}s"
            )


def fence_warning(node: str, fence_after: float, settings: DeciderSettings, keepalive: float) -> str | None:
    """What an operator should know about one node's advertised fence_after, if anything."""
    if fence_after <= 0:
        return (
            f"{node} has fencing disabled (fence_after 0): there is no split-brain guarantee if it is cut "
            "off; a failover away from it waits for its acknowledgement or an operator's forced failover"
        )
    total = fence_after + keepalive + settings.fence_margin
    if total >= settings.stale_after:
        return (
            f"{node} advertises fence_after {fence_after:g}s: fence_after + mqtt.keepalive "
            f"({keepalive:g}s) + decider.fence_margin ({settings.fence_margin:g}s) = {total:g}s is not "
            f"below decider.stale_after ({settings.stale_after:g}s); a failover away from it, when it "
            "is cut off, waits that long after its Last Will"
        )
    return None
