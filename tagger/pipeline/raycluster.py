"""Joining a Ray cluster (or starting a local one) from library code; ray is imported lazily.

A cluster address (``address`` or ``$RAY_ADDRESS``) is probed before Ray joins it, within
``$TAGGER_RAY_CONNECT_TIMEOUT`` seconds (default 30) in all: a TCP connect, then a gRPC handshake (a
Ray head's GCS and Ray Client ports speak gRPC), so a closed port, a dead head, a listener that
never answers or an HTTP server (the dashboard's address, which ``ray job submit`` takes) is one
:class:`~tagger.errors.ClusterError` instead of a hang; an ``http://`` address is refused with the
form to use. A refused connection (token authentication, version mismatch) is one ClusterError
too. While Ray joins, SIGTERM and SIGINT end the process at once, and a join that still hangs ends
it after :data:`JOIN_GRACE` more seconds, each with one ``error:`` line. A local Ray started here removes its
session folder (logs, sockets, spilled objects under ``$RAY_TMPDIR/ray``) when the call ends,
unless ``$TAGGER_RAY_KEEP_SESSION`` is set; a cluster's folders are never touched. SIGTERM while it
runs ends the process with status 143, as anywhere else.

:func:`placement` pins a stage's actors to the nodes that offer a custom resource
(``ray start --resources '{"gpu_node": 1}'``), e.g. the encoders and taggers to the GPU nodes.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import select
import signal
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import ClusterError, ConfigError

__all__ = ["CONNECT_TIMEOUT_ENV", "JOIN_GRACE", "check_address", "check_node_resource", "connect_timeout",
           "gpus_available", "host_port", "placement", "probe_cluster", "ray_session", "remove_session_dir"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_ENV = "TAGGER_RAY_CONNECT_TIMEOUT"
KEEP_SESSION_ENV = "TAGGER_RAY_KEEP_SESSION"
DEFAULT_CONNECT_TIMEOUT = 30.0
#: Seconds ``ray.init`` may take to join a probed cluster beyond the connect timeout before the process
#: ends with one error line (a join blocked inside Ray's C++ client cannot be interrupted otherwise).
JOIN_GRACE = 60.0
JOIN_EXIT_CODE = 2
_HTTP_SCHEMES = ("http", "https")
_LOCAL = ("local", "")
#: What one pinned actor takes of its node's custom resource: any number of them fit one node.
NODE_RESOURCE_SHARE = 0.01
_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def connect_timeout() -> float:
    """Seconds allowed to reach a cluster address (``$TAGGER_RAY_CONNECT_TIMEOUT``, default 30)."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"${CONNECT_TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def host_port(address: str) -> tuple[str, int] | None:
    """Host and port of a cluster address (``host:port``, ``ray://host[:port]``); None for ``auto``."""
    addr = address.strip()
    port = 6379  # the GCS port of ``ray start --head``
    if addr.lower() == "auto":
        return None
    if "://" in addr:
        scheme, addr = addr.split("://", 1)
        port = 10001 if scheme.lower() == "ray" else port  # Ray Client's port
    addr = addr.split("/", 1)[0]
    host, sep, tail = addr.rpartition(":")
    if not sep or "]" in tail:  # no port (an IPv6 literal alone ends in "]")
        host, tail = addr, str(port)
    try:
        return host.strip("[]"), int(tail)
    except ValueError:
        raise ConfigError(f"Ray address {address!r} has no valid port") from None


def _hint(address: str) -> str:
    return (f"check $RAY_ADDRESS (unset it to run on a local Ray) or raise ${CONNECT_TIMEOUT_ENV}; a head's "
            f"address is HOST:6379 (or ray://HOST:10001)")


def check_address(address: str) -> None:
    """Refuse the dashboard's ``http(s)://HOST:PORT`` form (what ``ray job submit`` takes) with the
    address forms commands join (ClusterError)."""
    scheme, sep, rest = address.strip().partition("://")
    if sep and scheme.lower() in _HTTP_SCHEMES:
        host = rest.split("/", 1)[0].rpartition(":")[0] or rest.split("/", 1)[0] or "HOST"
        raise ClusterError(
            f"RAY_ADDRESS {address} is a dashboard address, which `ray job submit` takes; tagger commands join "
            f"the cluster itself: set RAY_ADDRESS={host}:6379 (or ray://{host}:10001), or submit the verb as a "
            "job: ray job submit -- python -m jobs.<verb>")


def _speaks_http(target: tuple[str, int], timeout: float) -> bool:
    """Whether the listener at ``target`` answers an HTTP/1.0 request as an HTTP server."""
    try:
        with socket.create_connection(target, timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return s.recv(5) == b"HTTP/"
    except OSError:
        return False


def _grpc_ready(target: tuple[str, int], timeout: float) -> bool:
    """Whether a gRPC (HTTP/2) handshake with ``target`` completes within ``timeout`` seconds."""
    import grpc
    host, port = target
    channel = grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def probe_cluster(address: str, timeout: float | None = None) -> None:
    """Raise ClusterError unless ``address`` accepts a TCP connection and a gRPC handshake (as a Ray
    head's GCS or Ray Client port does) within ``timeout`` seconds in all."""
    check_address(address)
    target = host_port(address)
    if target is None:
        return
    timeout = connect_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
        raise ClusterError(f"cannot reach the Ray cluster at {address} within {timeout:g} s ({why}); "
                           f"{_hint(address)}") from e
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a TLS cluster's handshake needs its certificates: Ray checks it
    if not _grpc_ready(target, max(0.1, deadline - time.monotonic())):
        what = ("an HTTP server (a dashboard's port?), not a Ray head" if _speaks_http(target, 2.0)
                else "something that accepts connections but does not answer as a Ray head")
        raise ClusterError(f"the Ray cluster at {address} did not answer within {timeout:g} s: it is {what}; "
                           f"{_hint(address)}")


def _refused(address: str, e: BaseException) -> ClusterError:
    """One-line ClusterError for an exception ``ray.init`` raised while joining ``address``."""
    text = " ".join(str(e).split())
    first = text.split(". ")[0][:300] or type(e).__name__
    if any(w in text.lower() for w in ("auth", "token", "unauthenticated")):
        return ClusterError(
            f"the Ray cluster at {address} refused the connection: it requires token authentication "
            f"({first}); set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token")
    return ClusterError(f"cannot connect to the Ray cluster at {address}: {type(e).__name__}: {first}")


def _own_session_dir() -> str | None:
    """The session folder of the local Ray this process started; None when it joined one."""
    try:
        from ray._private import worker
        node = worker._global_node
        return node.get_session_dir_path() if node is not None and node.head else None
    except (ImportError, AttributeError):
        return None


def remove_session_dir(path: str) -> None:
    """Delete a local Ray session folder and the ``session_latest`` link when it points there."""
    shutil.rmtree(path, ignore_errors=True)
    latest = os.path.join(os.path.dirname(path), "session_latest")
    if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(path):
        os.unlink(latest)
    logger.debug("removed Ray session folder %s", path)


def _quiet() -> bool:
    """Ray's own INFO logs and warnings are hidden unless this process logs at INFO (``-v``, the jobs)."""
    return not logger.isEnabledFor(logging.INFO)


def _init(ray: Any, address: str | None, num_cpus: int | None) -> None:
    kw: dict[str, Any] = {"log_to_driver": False}
    if _quiet():
        kw["logging_level"] = logging.ERROR
    if address:
        probe_cluster(address)
    else:
        kw["include_dashboard"] = False
        if num_cpus:
            kw["num_cpus"] = num_cpus
    _check_command_line()
    if not address:
        _start_local(ray, kw)
        return
    try:
        with _join_guard(address):
            ray.init(address=address, ignore_reinit_error=True, **kw)
    except Exception as e:  # noqa: BLE001 - Ray raises bare Exceptions too (a node start timed out)
        raise _refused(address, e) from e


#: Tries at starting a local Ray: a start that fails on a loaded machine (its GCS or raylet not up in
#: time) is retried once after this many seconds.
LOCAL_START_RETRY_S = 5.0


def _start_local(ray: Any, kw: dict[str, Any]) -> None:
    """Start a Ray of this process's own ("local": never join another Ray of the machine, as a plain
    ray.init() would); a failed start is retried once, then a ClusterError says what failed."""
    for attempt in (1, 2):
        try:
            ray.init(address="local", ignore_reinit_error=True, **kw)
            return
        except Exception as e:  # noqa: BLE001 - Ray's node start raises a bare Exception on a timeout
            ray.shutdown()  # what half started goes before the next try
            text = " ".join(str(e).split())[:300] or type(e).__name__
            if attempt == 2:
                raise ClusterError(f"could not start a local Ray ({text}); nothing was lost: run the command "
                                   "again (a loaded machine can be too slow for Ray's start-up)") from e
            logger.warning("a local Ray did not start (%s); trying once more in %.0f s", text, LOCAL_START_RETRY_S)
            time.sleep(LOCAL_START_RETRY_S)


def _check_command_line() -> None:
    """ClusterError when this process's command line holds bytes that are not UTF-8 (a file name given
    as SOURCE): Ray records the command line as text and would fail half-started with a traceback."""
    for arg in getattr(sys, "orig_argv", sys.argv):  # the command line as this process got it
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "surrogateescape")
            raise ClusterError(f"an argument is not UTF-8 text ({raw!r}), which Ray cannot start with: give "
                               "that source as a glob (e.g. its folder's parent with *) or in a manifest") from None


def _give_up(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def _join_guard(address: str) -> Iterator[None]:
    """Bound ``ray.init`` joining ``address``: after the connect timeout plus :data:`JOIN_GRACE`
    seconds, or at SIGTERM / SIGINT (which Ray's own handler cannot serve while its client blocks),
    the process ends with one error line. Signals are seen through a wakeup fd, so this works while
    the main thread is blocked inside Ray."""
    limit = connect_timeout() + JOIN_GRACE
    r, w = os.pipe()
    os.set_blocking(w, False)
    main = threading.current_thread() is threading.main_thread()
    old = signal.set_wakeup_fd(w, warn_on_full_buffer=False) if main else None
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + limit
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                _give_up(f"joining the Ray cluster at {address} did not finish within {limit:g} s; "
                         f"{_hint(address)}", JOIN_EXIT_CODE)
            if select.select([r], [], [], min(left, 0.2))[0]:
                for signum in os.read(r, 64):
                    if signum in (signal.SIGTERM, signal.SIGINT) and not done.is_set():
                        _give_up(f"stopped by {signal.Signals(signum).name} while joining the Ray cluster at "
                                 f"{address}", 128 + signum)

    watcher = threading.Thread(target=watch, name="ray-join-guard", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        if old is not None:
            signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the running Ray (inside a job, or ``RAY_ADDRESS``) or start a local one for this call."""
    import ray

    started, session = False, None
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None and address.strip().lower() in _LOCAL:
            address = None
        _init(ray, address, num_cpus)
        started = True
        if address is None and not os.environ.get(KEEP_SESSION_ENV):
            session = _own_session_dir()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if _quiet():
            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.ERROR)
    with _sigterm_exit(before if started and main else None), _ray_warnings_hidden():
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()
                if session:
                    remove_session_dir(session)


@contextmanager
def _ray_warnings_hidden() -> Iterator[None]:
    """Python warnings Ray's own modules raise while a session runs (Ray Data's ``UserWarning`` that an
    actor pool is larger than its inputs) are hidden unless this process logs at INFO (``-v``, the jobs)."""
    if not _quiet():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        yield


@contextmanager
def _sigterm_exit(before: Any) -> Iterator[None]:
    """While a Ray this process started (or joined) runs, SIGTERM exits with status 143 (128 + 15, what
    the other stages give and what a shell reports for a terminated command) after the session's
    clean-up, where Ray's own handler exits with 15; then the handler from ``before`` Ray is back
    (None: leave the handlers alone, off the main thread or with a Ray started elsewhere)."""
    if before is None:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def gpus_available() -> float:
    """GPUs in the connected cluster (0 when none)."""
    import ray
    return float(ray.cluster_resources().get("GPU", 0.0))


def check_node_resource(name: str | None) -> None:
    """Raise ConfigError unless ``name`` (when given) can name a custom Ray resource."""
    if name is None:
        return
    if not name.strip() or name != name.strip():
        raise ConfigError(f"node resource must be a non-empty name without surrounding spaces, got {name!r}")
    if name in _BUILTIN_RESOURCES or name.startswith("node:"):
        raise ConfigError(f"node resource must be a custom resource (ray start --resources), not Ray's own {name!r}")


def placement(name: str | None) -> dict[str, Any]:
    """Ray options that keep a stage's actors on the nodes offering custom resource ``name`` (none:
    anywhere); :func:`tagger.pipeline.capacity.check_fits` says when no node offers it."""
    return {} if name is None else {"resources": {name: NODE_RESOURCE_SHARE}}
