"""cardano-node's Prometheus endpoint, as both the publisher and the actuator read it.

- ``canonical``: one name for a metric across node versions and tracing systems. Names are
  compared after dropping the ``cardano_node_[…_]metrics_`` prefix and the
  ``_int``/``_counter``/``_real`` suffix, case-insensitively (``slotNum_int``, ``slotNum`` and
  ``cardano_node_metrics_slotNum_int`` are all ``slotnum``).
- ``fetch``: the exposition, bounded as a whole: a socket timeout bounds each read only, and
  an endpoint that trickles its answer must not hold the caller's loop. Any failure is a
  ``MetricsUnavailable`` with a one-line reason.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.request

READ_CHUNK = 64 * 1024

_PREFIX = re.compile(r"^cardano_node_(?:[A-Za-z]+_)?metrics_")
_SUFFIX = re.compile(r"_(?:int|counter|real)$")


class MetricsUnavailable(Exception):
    """The endpoint gave no usable answer; the message says why, in one line."""


def canonical(name: str) -> str:
    return _SUFFIX.sub("", _PREFIX.sub("", name)).lower()


def fetch(url: str, timeout: float, max_body: int) -> str:
    """The body of ``url``, read within ``timeout`` seconds in all and at most ``max_body`` bytes."""
    deadline = time.monotonic() + timeout
    late = MetricsUnavailable(f"metrics {url} did not answer within {timeout:g}s")
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = bytearray()
            while len(body) <= max_body:
                if time.monotonic() > deadline:
                    raise late
                chunk = response.read1(READ_CHUNK)
                if not chunk:
                    break
                body += chunk
    except urllib.error.HTTPError as exc:
        raise MetricsUnavailable(f"metrics {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise late from None
        text = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise MetricsUnavailable(f"metrics {url} unreachable: {text}") from None
    except TimeoutError:
        raise late from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, malformed answers or URLs
        raise MetricsUnavailable(f"metrics {url}: {exc}") from None
    if len(body) > max_body:
        raise MetricsUnavailable(f"metrics {url}: response larger than {max_body} bytes")
    return body.decode("utf-8", errors="replace")
