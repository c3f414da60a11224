"""What a training run checks before and around its work, without TensorFlow (so that the tool can
run it before TensorFlow loads): the settings' ranges, the run-folder lock, SIGTERM treated as
Ctrl-C, and the wait for the other machines of a multi-worker cluster.

* :data:`FLOAT_RANGES` / :func:`float_problems`: every float setting finite and in its range (NaN
  passes every ``<``/``>`` check, so it is refused by name: ``--bn_momentum=nan`` used to train
  "successfully" into an all-NaN model).
* :class:`RunLock`: ``<model_dir>/train.lock`` (JSON: pid, host, process start time, start time,
  command) makes a second run on the same folder stop with a message naming the holder, instead of
  both writing the same checkpoints. A lock left by a run that died (its pid no longer running on
  this host) is taken over, with a note.
* :func:`sigterm_as_interrupt`: SIGTERM (what Slurm, Kubernetes, ``docker stop`` and systemd send)
  is handled as SIGINT, so the trainer saves a checkpoint of the steps done and stops (exit 130).
* :func:`wait_for_peers`: before ``MultiWorkerMirroredStrategy`` starts (its native wait for the
  other workers ignores signals and has no limit), this process listens on its own ``TF_CONFIG``
  address and waits, in Python, until every other worker's address accepts a connection: it says
  whom it waits for, gives up after a timeout, and stops on Ctrl-C / SIGTERM.
"""

import contextlib
import errno
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time

from prnet.errors import OutputFolderError, TrainingConfigError

logger = logging.getLogger(__name__)

LOCK_NAME = "train.lock"

#: Name of the signal that stopped the last run (``"SIGTERM"``) while :func:`sigterm_as_interrupt`
#: was active, for the tool's summary line; None after a Ctrl-C or no signal.
last_stop_signal = [None]


# ----------------------------------------------------------------------------- settings

#: Allowed ranges of the float settings: name -> (low, high, low inclusive, high inclusive); NaN and
#: infinities are refused everywhere (NaN passes every comparison-based check, so it is named here).
FLOAT_RANGES = {
    "learning_rate": (0.0, math.inf, False, False),
    "lr_decay_epochs": (0.0, math.inf, False, False),
    "lr_decay_factor": (0.0, 1.0, False, True),
    "weight_decay": (0.0, math.inf, True, False),
    "bn_momentum": (0.0, 1.0, True, False),
    "worker_timeout": (0.0, math.inf, False, False),
}


def range_text(low, high, low_in, high_in) -> str:
    """``'in [0, 1)'``, ``'> 0'``, ... for :data:`FLOAT_RANGES` entries."""
    if high == math.inf:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def float_problems(config) -> list:
    """``[(name, 'must be ...: got ...')]`` for every float setting of ``config`` outside :data:`FLOAT_RANGES`
    (None settings are skipped: they mean "the default")."""
    problems = []
    for name, (low, high, low_in, high_in) in FLOAT_RANGES.items():
        value = getattr(config, name, None)
        if value is None:
            continue
        value = float(value)
        ok = (math.isfinite(value) and (value >= low if low_in else value > low)
              and (value <= high if high_in else value < high))
        if not ok:
            problems.append((name, f"must be a finite number {range_text(low, high, low_in, high_in)}, got {value}"))
    return problems


# ----------------------------------------------------------------------------- the run-folder lock


def _process_start(pid: int):
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None
    (no /proc, or no such process). Tells a live holder from an unrelated process that got its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return False
    return True


def _holder_alive(info: dict) -> bool:
    """Whether the lock's holder (on this host) still runs: its pid is alive and, where both are
    known, has the recorded start time."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid):
        return False
    recorded, now = info.get("process_start"), _process_start(pid)
    return recorded is None or now is None or recorded == now


def _age(path) -> float:
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return 0.0


def describe_holder(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f": {info['command']}" if info.get("command") else ""))


class RunLock:
    """``<folder>/train.lock``, held by one training process at a time (re-entrant in that process).

    :meth:`acquire` creates it exclusively; when it exists, a holder on another host or a live
    holder on this one makes it raise :class:`TrainingConfigError` naming the holder; a dead
    holder's lock is taken over (``note`` says so). :meth:`release` removes it if it is still ours.
    """

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), LOCK_NAME)
        self.held = False
        self.note = None

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "command": " ".join(sys.argv)[:500]}

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.load(f)
            return info if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: no usable holder

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        me = self._info()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as e:
            raise OutputFolderError(f"cannot create the run folder {os.path.dirname(self.path)} ({e.strerror or e})"
                                    ) from e
        for _ in range(30):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = None
            except OSError as e:
                raise OutputFolderError(f"cannot create the lock file {self.path} ({e.strerror or e})") from e
            if fd is None:
                info = self._read()
                if info is None:
                    continue  # removed meanwhile: try again
                if not info and _age(self.path) < 5.0:
                    time.sleep(0.2)  # being written by the run that just created it
                    continue
                if info.get("host") == me["host"] and info.get("pid") == me["pid"]:
                    self.held = True  # this process already holds it (another Trainer of the same run)
                    return self
                if info.get("host") not in (None, me["host"]) or (info.get("host") and _holder_alive(info)):
                    raise TrainingConfigError(
                        f"{os.path.dirname(self.path)} is in use by another training run ({describe_holder(info)}); "
                        f"wait for it to finish or choose another --output_dir (if that run is gone, delete "
                        f"{self.path})")
                self.note = (f"took over the lock {self.path} left by a run that is no longer running "
                             f"({describe_holder(info) if info else 'unreadable lock file'})")
                logger.warning("%s", self.note)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
                f.write("\n")
            self.held = True
            return self
        raise TrainingConfigError(f"cannot take the lock {self.path}: another run keeps creating it")

    def release(self):
        if not self.held:
            return
        self.held = False
        info = self._read()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------- SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM does what SIGINT does: the current SIGINT handler runs (Python's
    raises ``KeyboardInterrupt``; :func:`prnet.core.files.interrupts_deferred`'s holds it until its
    block ends), or ``KeyboardInterrupt`` is raised when SIGINT is ignored (a background job).
    Sets :data:`last_stop_signal`. Main thread only (elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        last_stop_signal[0] = "SIGTERM"
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # pragma: no cover (embedded interpreters)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- multi-worker peers


#: Default of ``--worker_timeout``: seconds to wait for every worker of ``TF_CONFIG`` to start.
DEFAULT_WORKER_TIMEOUT_S = 600.0


def _split_address(address: str):
    host, sep, port = str(address).rpartition(":")
    if not sep or not port.isdigit():
        raise TrainingConfigError(f"TF_CONFIG address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def cluster_addresses(tf_config: dict):
    """``(own address, [(job, index, address) of every other chief/worker task])`` of a parsed TF_CONFIG."""
    cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
    own_job, own_index = task.get("type"), task.get("index")
    jobs = cluster.get(own_job) or []
    if not isinstance(own_index, int) or not 0 <= own_index < len(jobs):
        raise TrainingConfigError(f"TF_CONFIG task {own_job!r} index {own_index!r} is not in its cluster "
                                  f"({len(jobs)} {own_job!r} task(s))")
    peers = [(job, i, address) for job in ("chief", "worker") for i, address in enumerate(cluster.get(job) or [])
             if (job, i) != (own_job, own_index)]
    return jobs[own_index], peers


def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_peers(tf_config: dict, timeout: float = DEFAULT_WORKER_TIMEOUT_S, log=print, poll: float = 0.5,
                   repeat_every: float = 30.0):
    """Listen on this task's ``TF_CONFIG`` port and wait until every other chief/worker address accepts
    a TCP connection (so each worker sees the others come up; the port is closed again before
    TensorFlow binds it). Says whom it waits for (``log``) and repeats it every ``repeat_every`` s;
    raises :class:`TrainingConfigError` naming the missing workers after ``timeout`` s, and lets
    ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM under :func:`sigterm_as_interrupt`) through."""
    own, peers = cluster_addresses(tf_config)
    _, own_port = _split_address(own)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            listener.bind(("", own_port))
            listener.listen(16)
        except OSError as e:
            listener.close()
            listener = None
            if e.errno != errno.EADDRINUSE:
                raise TrainingConfigError(f"cannot listen on this worker's TF_CONFIG address {own} ({e.strerror or e})"
                                          ) from e
            raise TrainingConfigError(f"this worker's TF_CONFIG address {own} is in use by another process; "
                                      "stop it or give this worker another port in TF_CONFIG") from e
        start = time.monotonic()
        missing, said = list(peers), None
        while True:
            missing = [p for p in missing if not _reachable(p[2], timeout=min(1.0, poll * 2))]
            if not missing:
                if said is not None:
                    log(f"all {len(peers) + 1} workers of TF_CONFIG are up")
                return
            waited = time.monotonic() - start
            names = ", ".join(f"{job} {i} at {address}" for job, i, address in missing)
            if waited >= timeout:
                raise TrainingConfigError(
                    f"gave up after {timeout:g} s waiting for {names} (TF_CONFIG): start the same command there "
                    "with that task index, check the host names, ports and firewalls, or raise --worker_timeout")
            if said is None or waited - said >= repeat_every:
                log(f"waiting for {names} (TF_CONFIG; this is {own}); giving up after {timeout:g} s "
                    "(--worker_timeout), Ctrl-C stops")
                said = waited
            time.sleep(min(poll, max(timeout - waited, 0.01)))
    finally:
        if listener is not None:
            listener.close()
