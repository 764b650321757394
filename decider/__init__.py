"""The decider: watches tips and node states of one or many pools and commands roles.

``bpfailover.decider.core.Decider`` is the pure state machine; ``bpfailover.decider.service.run`` is its
MQTT shell. See docs/decider.md.
"""

from bpfailover.decider.actions import Action, PublishDryRun, PublishEvent, PublishRole, PublishStatus
from bpfailover.decider.core import Decider
from bpfailover.decider.invariants import check_invariants
from bpfailover.decider.model import Now

__all__ = [
    "Action",
    "Decider",
    "Now",
    "PublishDryRun",
    "PublishEvent",
    "PublishRole",
    "PublishStatus",
    "check_invariants",
]
