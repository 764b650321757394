"""The decider: watches tips and node states of one or many pools and commands roles.

``decider.core.Decider`` is the pure state machine; ``decider.service.run`` is its
MQTT shell. See docs/decider.md.
"""

from decider.actions import Action, PublishDryRun, PublishEvent, PublishRole, PublishStatus
from decider.core import Decider
from decider.invariants import check_invariants
from decider.model import Now

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
