"""The fence's clock and its memory: when did the broker last surely hear from this node?

Two facts make this its own module:

- **The clock keeps running while the host sleeps.** CLOCK_MONOTONIC stops during a
  suspend, a VM pause or a live migration, while the broker's keepalive and the decider's
  wait go on. The fence is timed on CLOCK_BOOTTIME (``boot_clock``), which counts the
  time suspended, so a host that resumes after its fence time finds the fence due at once.
- **The last contact outlives the process.** A crash-looping actuator that started its
  fence clock afresh with each process would never fence, while the decider counts from
  the first Last Will. ``ContactMemory`` keeps the last contact in ``state_dir`` with the
  kernel's boot id: the same boot takes it as it is; after a reboot (when the boot clock
  restarted) it is carried over by the wall clock, and a wall clock that went backwards
  counts as "too long ago", so a rebooted producer fences at once rather than late.

Writing the memory must never hold up a fence (a hung disk): ``remember`` hands the value
to a writer thread and returns; the newest value wins.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

from bpfailover.actuator.atomic import atomic_write

log = logging.getLogger("bpfailover.actuator")

CONTACT_FILE = "last-contact.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_clock() -> float:
    """Seconds on a clock that counts suspended time too (CLOCK_BOOTTIME on Linux)."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux: the closest there is
        return time.monotonic()


def boot_id() -> str:
    """The kernel's id of this boot; '' where there is none (then every start is a new boot)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


class ContactMemory:
    """``state_dir/last-contact.json``: the last broker contact, across actuator restarts."""

    def __init__(
        self,
        state_dir: Path,
        *,
        boot: str | None = None,
    ) -> None:
        self.path = Path(state_dir) / CONTACT_FILE
        self.boot = boot_id() if boot is None else boot
        self._latest: tuple[float, float] | None = None
        self._written: tuple[float, float] | None = None
        self._wake = threading.Condition()
        self._writer: threading.Thread | None = None

    def load(self, now_boot: float, now_wall: float) -> float | None:
        """The last contact as an instant of this boot's ``boot_clock``; None when unknown.

        -inf when it cannot be placed safely (a wall clock that went backwards across a reboot,
        an unreadable file): the caller then treats the node as long out of contact.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read %s (%s): treating the last broker contact as long ago", self.path, exc)
            return -math.inf
        try:
            data = json.loads(raw)
            saved_boot, at_boot, at_wall = str(data["boot_id"]), float(data["boot"]), float(data["wall"])
        except (ValueError, KeyError, TypeError):
            log.error("%s is corrupt: treating the last broker contact as long ago", self.path)
            return -math.inf
        if not (math.isfinite(at_boot) and math.isfinite(at_wall)):
            return -math.inf
        if saved_boot and saved_boot == self.boot:
            return min(at_boot, now_boot)
        ago = now_wall - at_wall
        return now_boot - ago if ago >= 0 else -math.inf

    def remember(self, at_boot: float, at_wall: float) -> None:
        """Keep this contact (written by a background thread; never blocks)."""
        with self._wake:
            if self._latest is not None and self._latest[0] >= at_boot:
                return
            self._latest = (at_boot, at_wall)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, name="contact-writer", daemon=True)
                self._writer.start()
            self._wake.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until the newest contact is on disk; False on timeout (tests, clean stop)."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._written != self._latest:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while self._latest == self._written:
                    if not self._wake.wait(5.0):
                        self._writer = None
                        return
                value = self._latest
            assert value is not None
            data = json.dumps({"boot_id": self.boot, "boot": value[0], "wall": value[1]}).encode()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, data + b"\n", mode=0o600)
            except OSError as exc:
                log.error("cannot write %s: %s", self.path, exc)
                time.sleep(1.0)
                continue
            with self._wake:
                self._written = value
                self._wake.notify_all()
