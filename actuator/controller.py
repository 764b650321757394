"""The role controller: durable state + method + what the node reports, without MQTT.

It owns the answer to "what is applied on this node now" and every change to it:
start-up convergence, commands that passed ``policy``, and self-fencing. The service
feeds it and publishes ``status()``; tests drive it directly with files in a temp folder.

Two epochs are kept apart. The *stored* epoch (on disk, ``epoch``) is the highest epoch
accepted; it is written before a promotion and is what the epoch rule checks commands
against. The *reported* epoch (``status().epoch``, NodeState.epoch) is the epoch of the
role actually applied on the node: while a command is being applied it stays at the
previous one, with ``pending`` naming the role under way, and it moves to the command's
epoch only once that role is applied. A node whose role is unknown applies no epoch; it
reports the stored one, so that nobody reuses an epoch it has accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bpfailover.actuator import roles
from bpfailover.actuator.commands import ApplyAborted, StepOverrun, within
from bpfailover.actuator.methods import ApplyError, Method
from bpfailover.actuator.methods.base import Abort
from bpfailover.actuator.policy import Verdict
from bpfailover.actuator.roles import RoleState, Start, role_state
from bpfailover.actuator.state import StateCorrupt, StateStore, StoredState
from bpfailover.logs import log_exception
from bpfailover.protocol.wire import AppliedRole, Role, RoleCommand

log = logging.getLogger("bpfailover.actuator")

MARK_WAIT = 0.5  # seconds a fence waits for its mark on disk (FENCE_SLACK covers it)


@dataclass(frozen=True)
class Status:
    """The facts a NodeState carries about the role."""

    role: AppliedRole
    epoch: int
    pending: Role | None
    fenced: bool
    error: str | None
    rejected: str | None = None


class RoleController:
    def __init__(
        self,
        pool: str,
        node: str,
        method: Method,
        store: StateStore,
        *,
        dry_run: bool = False,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.node = node
        self.method = method
        self.store = store
        self.dry_run = dry_run
        self.on_change = on_change or (lambda: None)
        # Called while an apply runs (a command, a retry pause): busy, not hung (systemd's watchdog).
        self.alive: Callable[[], None] = lambda: None
        # Called when an apply that restarts the node (``Method.restarts_node``) succeeded.
        self.on_restart: Callable[[], None] = lambda: None
        self.stored: StoredState | None = None
        self.applied: AppliedRole = "unknown"
        self.applied_epoch = 0  # the epoch of the command whose role is ``applied``
        self.pending: Role | None = None
        self.fenced = False
        self.apply_error: str | None = None
        self.state_error: str | None = None
        self.rejection: str | None = None

    # --- what the node reports ------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.stored.epoch if self.stored else 0

    @property
    def stored_role(self) -> Role | None:
        return self.stored.role if self.stored else None

    def status(self) -> Status:
        errors = [e for e in (self.state_error, self.apply_error) if e]
        error = "; ".join(errors)[:500] if errors else None
        rejected = self.rejection[:500] if self.rejection else None
        if self.dry_run:
            return self._dry_status(error, rejected)
        epoch = self.epoch if self.applied == "unknown" else self.applied_epoch
        return Status(self.applied, epoch, self.pending, self.fenced, error, rejected)

    def _dry_status(self, error: str | None, rejected: str | None) -> Status:
        """Dry-run: the role the node runs now (looked at again); in ``pending`` the one we would apply."""
        detected = self.method.detect_role()
        role: AppliedRole = detected if detected is not None else self.applied
        wanted = self.stored.desired_role() if self.stored else None
        if wanted is None or wanted == role:
            return Status(role, self.epoch, None, False, error, rejected)
        epoch = self.epoch if role == "unknown" else self.applied_epoch
        # ``fenced`` is never claimed: a dry-run actuator only says it would demote (pending relay).
        return Status(role, epoch, wanted, False, error, rejected)

    def _observe(self) -> None:
        """Dry-run: the node is run by someone else, so look at what it runs before deciding."""
        if self.dry_run:
            detected = self.method.detect_role()
            if detected is not None and detected != self.applied:
                self.applied = detected
                if detected == (self.stored.desired_role() if self.stored else None):
                    self.applied_epoch = self.epoch

    @property
    def forging(self) -> bool | None:
        """The node's forging state as last observed (None: unknown, or no source configured)."""
        return self.method.observer.last.forging

    def out_of_line(self) -> Role | None:
        """The role to re-apply when the node, as observed, does not run the one applied (or has
        never been SIGHUPed while up, so its metric cannot be trusted yet); None when in line."""
        if self.dry_run or self.pending is not None or not self.method.can_reassert():
            return None
        seen = self.method.observer.last
        if self.applied == "relay" and (seen.forging is True or (seen.untested and seen.up)):
            return "relay"
        producing = self.applied == "producer" and not self.fenced
        if producing and (seen.forging is False or (seen.untested and seen.up)):
            return "producer"
        return None

    def reassert(self, role: Role, why: str, abort: Abort | None = None) -> bool:
        """SIGHUP the node again for the role it should run already; True once seen running it.

        Not a role change (the files already say ``role``): no epoch moves. A relay that cannot
        be confirmed ends like any demotion (stop_command); a producer that cannot keeps its role
        with the error reported, and the decider fails it over (it is not forging)."""
        log.warning("%s/%s: re-applying %s: %s", self.pool, self.node, role, why)
        try:
            self.method.reassert(role, abort, self.alive)
        except ApplyError as exc:
            if role == "relay":
                self.applied = exc.applied
            self.apply_error = str(exc)[:300]
            log.error("%s/%s: re-applying %s failed: %s", self.pool, self.node, role, exc)
            return False
        except ApplyAborted:
            self.applied = "unknown"
            self.fence("re-applying producer abandoned: broker contact lost")
            return False
        if self.apply_error is not None and self.apply_error.startswith(role):
            self.apply_error = None
        log.warning("%s/%s: %s re-applied and seen", self.pool, self.node, role)
        return True

    def might_forge(self) -> bool:
        """Whether the node may be forging now, so that losing the broker must fence it."""
        if self.fenced:
            return False
        if self.applied == "producer":
            return True
        # A promotion that failed or was interrupted may have left the node producing.
        return (
            self.applied == "unknown" and self.stored is not None and self.stored.desired_role() == "producer"
        )

    # --- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the stored state, detect the applied role, and demote if the store says relay.

        Nothing is promoted here: a producer needs a command received from the broker.
        """
        try:
            self.stored = self.store.load()
        except StateCorrupt as exc:
            self.state_error = f"{exc}; treating this node as relay"
            log.error("%s/%s: %s", self.pool, self.node, self.state_error)
            self.stored = StoredState(pool=self.pool, node=self.node, epoch=0, role="relay")
        detected = self.method.detect_role()
        if self.stored is not None and self.stored.pending is not None:
            # An apply was interrupted: whatever the files say, the node may not run it.
            self.applied = "unknown"
        elif detected is not None:
            self.applied = detected
        elif self.stored is not None:
            self.applied = self.stored.desired_role()
        self.fenced = bool(self.stored and self.stored.fenced)
        self.applied_epoch = self.epoch
        log.info(
            "%s/%s: method %s, applied role %s, stored %s%s",
            self.pool,
            self.node,
            self.method.name,
            self.applied,
            f"{self.stored.role} at epoch {self.stored.epoch}" if self.stored else "nothing",
            " (fenced)" if self.fenced else "",
        )
        self.converge_relay("stored state says relay")
        if self.stored is not None and self.stored.pending == "producer" and not self.dry_run:
            # Half promoted, perhaps forging: demote, and let only a higher epoch promote it again.
            self.fence("a promotion was interrupted (the actuator stopped during it)")

    def needs_demotion(self) -> bool:
        """The stored state says relay but the node is not known to run as relay (a failed demotion)."""
        return self.stored is not None and self.stored.desired_role() == "relay" and self.applied != "relay"

    def converge_relay(self, why: str) -> None:
        """Demote when the stored state says relay but the node is not (at start; after a failed demotion)."""
        stored = self.stored
        if stored is None or not self.needs_demotion():
            return
        done = self._apply("relay", why, abort=None)
        if self.applied == "relay":  # done, or stopped by stop_command
            self.applied_epoch = stored.epoch
        if done and self.state_error is None and stored.pending is not None:
            self._store(stored.epoch, stored.role, pending=None, fenced=stored.fenced)

    # --- commands ---------------------------------------------------------------------------

    def note_rejection(self, reason: str, detail: str) -> None:
        self.rejection = f"rejected {reason}: {detail}"

    def on_command(self, verdict: Verdict, abort: Abort | None = None) -> None:
        """Apply an accepted command (``policy.check_command`` already ran)."""
        command = verdict.command
        if command is None:
            return
        self.rejection = None
        self.state_error = None
        self.apply_error = None
        self._observe()
        role, epoch = command.role, command.epoch
        if role == "relay" and role == self.applied and self.out_of_line() == "relay":
            self.reassert("relay", f"command at epoch {epoch}, and the node is seen forging")
        if role == self.applied:
            if verdict.kind == "apply" or self.fenced or (self.stored and self.stored.pending):
                self._store(epoch, role, pending=None, command=command)
            self.fenced = False
            self.pending = None
            self.applied_epoch = epoch
            log.info(
                "%s/%s: %s at epoch %d already applied; nothing to run", self.pool, self.node, role, epoch
            )
            return
        # Before promoting: never producer at an epoch that is not on disk. A demotion goes ahead anyway.
        # The stored epoch moves now; the reported one only once the role is applied.
        stored = self._store(epoch, role, pending=role, required=role == "producer", command=command)
        if not stored and role == "producer":
            log.error("%s/%s: not promoting: the epoch could not be stored", self.pool, self.node)
            return
        self.fenced = False
        why = f"command from {command.decider} at epoch {epoch}: {command.reason or 'no reason given'}"
        try:
            done = self._apply(role, why, abort=abort if role == "producer" else None)
        except ApplyAborted:
            self.applied = "unknown"
            self.pending = None
            self.fence("promotion abandoned: broker contact lost")
            return
        if self.applied == role:  # done, or a demotion that ended with stop_command
            self.applied_epoch = epoch
        if done:
            self._store(epoch, role, pending=None, command=command)

    # --- fencing ----------------------------------------------------------------------------

    def fence(self, why: str) -> bool:
        """Demote the node locally, keeping the stored epoch; True when it is now relay.

        Every step is bounded in time, also on a disk that hangs: the mark on disk is waited
        for at most MARK_WAIT, and the method's demotion (file steps included) ends within
        ``demotion_bound``, with ``stop_command`` as its last resort. Whatever happens in
        between, the node never becomes producer again at this epoch (``policy``: a producer
        command is carried out once).
        """
        self._observe()
        if not self.might_forge():
            return True
        log.warning("%s/%s: FENCING: %s; demoting to relay", self.pool, self.node, why)
        stored = self.stored
        epoch = stored.epoch if stored else 0
        role: Role = stored.role if stored else "relay"
        self._mark(epoch, role, pending="relay")
        done = self._apply("relay", f"fence: {why}", abort=None, move="fence")
        if done or self.dry_run or self.applied == "relay":
            # Stopped by stop_command also counts: the node no longer forges. A dry-run
            # actuator only remembers that it would have fenced, so as not to try again.
            self.fenced = True
        if self.applied == "relay":
            self.applied_epoch = epoch  # relay, fenced from the producer at this epoch
        if done:
            self._mark(epoch, role, pending=None)
        return done

    def _mark(self, epoch: int, role: Role, *, pending: Role | None) -> None:
        """Record the fence on disk, waiting at most MARK_WAIT: a disk that hangs must not hold up
        the demotion. Safety does not rest on the mark: without it, a restarted actuator still
        fences at once (its last contact is kept), and never re-promotes at this epoch (policy)."""
        try:
            within(MARK_WAIT, lambda: self._store(epoch, role, pending=pending, fenced=True), "fence mark")
        except StepOverrun as exc:
            self.state_error = f"{exc}: the state disk may hang"
            log.error("%s/%s: %s; demoting anyway", self.pool, self.node, self.state_error)

    # --- internals --------------------------------------------------------------------------

    def _store(
        self,
        epoch: int,
        role: Role,
        *,
        pending: Role | None,
        fenced: bool = False,
        required: bool = False,
        command: RoleCommand | None = None,
    ) -> bool:
        """Record the state on disk (not in dry-run); False if writing failed.

        A failed write is reported; the state is still kept in memory unless ``required``.
        ``command``: the signed command behind ``epoch`` (kept from before when not given), which
        the NodeState shows so that the decider can trust the epoch it claims.
        """
        if command is None and self.stored is not None and self.stored.epoch == epoch:
            command = self.stored.command
        state = StoredState(
            pool=self.pool,
            node=self.node,
            epoch=epoch,
            role=role,
            fenced=fenced,
            pending=pending,
            command=command,
        )
        written = True
        if not self.dry_run:
            try:
                self.store.save(state)
            except OSError as exc:
                written = False
                self.state_error = f"cannot write {self.store.path}: {exc.strerror or exc}"
                log.error("%s/%s: %s", self.pool, self.node, self.state_error)
        if written or not required:
            self.stored = state
        return written

    @property
    def state(self) -> RoleState:
        """The named role state (``bpfailover.actuator.roles``)."""
        return role_state(self.applied, self.pending, self.fenced)

    def _apply(self, role: Role, why: str, *, abort: Abort | None, move: Start | None = None) -> bool:
        """Run the method; True on success. Failures are recorded, never raised (but ApplyAborted).

        The move (``promote``, ``demote`` or ``fence``) must be in the role table, or nothing runs.
        """
        during = roles.start(self.state, move or ("promote" if role == "producer" else "demote"))
        if self.dry_run:
            log.warning(
                "%s/%s: DRY-RUN: would apply %s (%s): %s",
                self.pool,
                self.node,
                role,
                why,
                self.method.describe(role),
            )
            self.on_change()  # the report shows the role it would apply in ``pending``
            return False
        log.warning(
            "%s/%s: applying %s (%s): %s", self.pool, self.node, role, why, self.method.describe(role)
        )
        self.pending = role
        self.on_change()
        try:
            self.method.apply(role, abort, self.alive)
        except ApplyError as exc:
            self.pending = None
            self.applied = exc.applied
            self.apply_error = str(exc)[:300]
            log.error("%s/%s: applying %s failed: %s", self.pool, self.node, role, exc)
            roles.end(during, role_state(exc.applied, None, move == "fence"))
            return False
        except ApplyAborted:
            raise
        except Exception as exc:  # a bug in a method must not kill the actuator of a producer
            log_exception(log, "%s/%s: applying %s failed unexpectedly", self.pool, self.node, role)
            self.applied = "unknown"
            self.apply_error = f"{role}: internal error: {exc}"[:300]
            return False
        finally:
            self.pending = None
        self.applied = role
        self.apply_error = None
        roles.end(during, role_state(role, None, move == "fence"))
        if self.method.restarts_node:
            self.on_restart()
        log.warning("%s/%s: %s applied", self.pool, self.node, role)
        return True
