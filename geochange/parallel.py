"""Worker processes for block-parallel work that start clean and die with their parent.

:mod:`multiprocessing`'s ``spawn`` and ``forkserver`` children both run
``multiprocessing.spawn.prepare()``, which re-imports the caller's ``__main__`` from its path:
a script without an ``if __name__ == "__main__":`` guard re-runs itself in every worker (and
the pool breaks), and a script read from standard input cannot be re-imported at all. ``fork``
is unsafe with GDAL and torch threads. Their workers also outlive a killed parent, holding its
output pipes open.

:class:`WorkerPool` starts each worker as a fresh interpreter (``python -c``) that imports only
this module, receives the caller's ``sys.path`` and then runs importable functions sent to it
by reference. It never touches ``__main__``, so it works the same from a guarded or unguarded
script, standard input, ``python -c``, Jupyter or ``python -m``. A worker exits as soon as its
parent is gone, whether it is idle or busy: its task pipe reaches end-of-file (the parent
holds the only write end and closes it only once every task it sent is answered, so
end-of-file with a task unanswered means the parent died) and, on Linux, ``PR_SET_PDEATHSIG``
kills it even while native code holds the GIL. Workers never hold the caller's standard
output: theirs goes to standard error.

Tasks and results are pickled over private pipes between the parent and its own workers, as
:mod:`multiprocessing` does; nothing else is unpickled. POSIX only (the pipes reach the workers
through ``subprocess``'s ``pass_fds``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

__all__ = ["BrokenProcessPool", "RemoteTraceback", "WorkerPool"]

# Run by each worker: make this copy of geochange importable, then serve tasks.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from geochange.parallel import _worker_main; _worker_main(sys.argv[2:])"
)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_EXIT_PARENT_GONE = 70
# How long a clean shutdown waits for an idle worker to exit before killing it.
_EXIT_TIMEOUT_S = 30.0
# Tasks sent to a worker at once: the running one and the next.
_IN_FLIGHT = 2


class RemoteTraceback(Exception):
    """A worker's formatted traceback, set as ``__cause__`` of the exception it raised."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


@dataclass
class _Task:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class WorkerPool(Executor):
    """A :class:`concurrent.futures.Executor` over fresh worker interpreters.

    Functions (and ``initializer``) must be importable by module and name, like
    ``geochange.vectorize.blocks._polygonize_block``: the workers never import the caller's
    ``__main__``. Each worker runs one task at a time, with the next one already queued; tasks
    are handed out in submission order. On a worker crash the pool is broken: pending and
    later tasks fail with :class:`BrokenProcessPool`.

    Use it as a context manager in the thread that created it: leaving the block normally
    waits for the workers to exit, leaving it with an exception (including
    ``KeyboardInterrupt``, which the workers themselves ignore) kills them at once. On Linux
    the workers are also killed when the thread that created the pool exits.

    Args:
        workers: number of worker processes (>= 1), all started at once.
        initializer: optional importable function each worker runs once before any task.
        initargs: arguments of ``initializer``.

    Raises:
        ValueError: ``workers < 1`` or a function defined in ``__main__``.
        OSError: a worker process could not be started.
    """

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if initializer is not None:
            _check_importable(initializer)
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._shutdown = False
        self._workers: list[_Worker] = []
        try:
            for index in range(workers):
                self._workers.append(_Worker(self, index, initializer, initargs))
        except BaseException:
            self.terminate()
            raise
        for worker in self._workers:
            worker.thread.start()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [worker.process.pid for worker in self._workers]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` in a worker; returns its future.

        Raises:
            BrokenProcessPool: a worker died, or the pool was terminated.
            RuntimeError: the pool is shut down.
            ValueError: ``fn`` is defined in ``__main__``.
        """
        _check_importable(fn)
        with self._lock:
            if self._broken is not None:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot submit a task to a WorkerPool that is shut down")
            future: Future[Any] = Future()
            self._tasks.put(_Task(future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the workers finish the submitted tasks, then exit.

        Args:
            wait: wait until every worker has exited.
            cancel_futures: cancel the tasks that have not started.
        """
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    self._drain(cancel=True)
                for _ in self._workers:
                    self._tasks.put(None)  # one stop sign per worker, after the tasks
        if wait:
            for worker in self._workers:
                if worker.thread.is_alive():
                    worker.thread.join()

    def terminate(self) -> None:
        """Kill the workers now; unfinished tasks fail with :class:`BrokenProcessPool`."""
        self._break("the worker pool was terminated")
        for worker in self._workers:
            worker.kill()
            if not worker.thread.is_alive() and worker.thread.ident is None:
                worker.close()  # never served (the pool failed to start): reap it here
        self.shutdown(wait=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is None:
            self.shutdown(wait=True)
        else:
            self.terminate()
        return False

    def _break(self, message: str) -> None:
        """Mark the pool broken and fail every task not yet started."""
        with self._lock:
            if self._broken is None:
                self._broken = message
            self._drain(cancel=False)

    def _drain(self, cancel: bool) -> None:
        # Called with the lock held; stop signs are put back for the worker threads.
        stops = 0
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                break
            if task is None:
                stops += 1
            elif cancel:
                task.future.cancel()
            elif task.future.set_running_or_notify_cancel():
                task.future.set_exception(BrokenProcessPool(self._broken))
        for _ in range(stops):
            self._tasks.put(None)


def _check_importable(fn: Callable[..., Any]) -> None:
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(
            f"WorkerPool runs importable functions only; {fn!r} is defined in __main__, "
            "which workers never import"
        )


def _stdout_for_workers() -> int:
    """Workers' standard output: our standard error, so they never hold the caller's stdout."""
    try:
        os.fstat(2)
    except OSError:
        return subprocess.DEVNULL
    return 2


class _Worker:
    """One worker process and the thread in this process that feeds it tasks."""

    def __init__(
        self,
        pool: WorkerPool,
        index: int,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
    ) -> None:
        self.pool = pool
        self.init = (initializer, initargs)
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    _PACKAGE_ROOT,
                    str(task_r),
                    str(result_w),
                    str(os.getpid()),
                ],
                pass_fds=(task_r, result_w),
                stdin=subprocess.DEVNULL,
                stdout=_stdout_for_workers(),
            )
        except BaseException:
            os.close(task_w)
            os.close(result_r)
            raise
        finally:
            os.close(task_r)
            os.close(result_w)
        # This process holds the only write end of the task pipe: its end-of-file tells the
        # worker that we are done, or gone.
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.thread = threading.Thread(
            target=self._serve, name=f"geochange-worker-{index}", daemon=True
        )

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def _died(self) -> str:
        try:
            code = self.process.wait(_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # its pipes broke, yet it lives on
            self.kill()
            code = self.process.wait()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        hint = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
        return f"worker process {self.process.pid} died unexpectedly with {how}{hint}"

    def close(self) -> None:
        """Close the task pipe (the worker exits) and reap the process."""
        self.tasks.close()
        try:
            self.process.wait(_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
        self.results.close()

    def _serve(self) -> None:
        try:
            self._handshake()
            self._loop()
        except BaseException as exc:  # a bug here: fail the pending tasks rather than hang
            self.pool._break(f"worker thread failed: {exc!r}")
            raise
        finally:
            self.close()

    def _handshake(self) -> None:
        try:
            init = pickle.dumps(self.init, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self.pool._break(f"the worker initializer cannot be sent: {exc!r}")
            return
        try:
            # sys.path first, as plain data: the initializer's modules import through it.
            self.tasks.send_bytes(pickle.dumps((list(sys.path), init)))
            ok, error = pickle.loads(self.results.recv_bytes())
        except (OSError, EOFError):
            self.pool._break(self._died())
            return
        if not ok:
            self.pool._break(f"worker initializer failed:\n{error}")

    def _loop(self) -> None:
        pool = self.pool
        sent: collections.deque[_Task] = collections.deque()
        stopping = False
        while not stopping or sent:
            # Keep the next task queued in the worker's pipe behind the running one, so the
            # worker never waits for this thread (which may wait for the GIL) between tasks.
            while not stopping and len(sent) < _IN_FLIGHT:
                try:
                    task = pool._tasks.get(block=not sent)
                except queue.Empty:
                    break
                if task is None:
                    stopping = True
                elif self._send(task):
                    sent.append(task)
            if sent:
                self._receive(sent.popleft())

    def _send(self, task: _Task) -> bool:
        """Send ``task`` to the worker; False if it was cancelled or failed here."""
        pool = self.pool
        if not task.future.set_running_or_notify_cancel():
            return False
        if pool._broken is not None:
            task.future.set_exception(BrokenProcessPool(pool._broken))
            return False
        try:
            data = pickle.dumps((task.fn, task.args, task.kwargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            task.future.set_exception(exc)
            return False
        try:
            self.tasks.send_bytes(data)
        except OSError:
            pool._break(self._died())
            task.future.set_exception(BrokenProcessPool(pool._broken))
            return False
        return True

    def _receive(self, task: _Task) -> None:
        """Wait for the worker's answer to ``task`` (tasks are answered in order)."""
        pool = self.pool
        try:
            reply = self.results.recv_bytes()
        except (OSError, EOFError):
            pool._break(self._died())  # first: later submits fail at once
            task.future.set_exception(BrokenProcessPool(pool._broken))
            return
        try:
            ok, value, text = pickle.loads(reply)
        except Exception as exc:
            task.future.set_exception(exc)
            return
        if ok:
            task.future.set_result(value)
        else:
            value.__cause__ = RemoteTraceback(text)
            task.future.set_exception(value)


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        # Killed by the kernel when the parent thread exits, even inside native code.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(_EXIT_PARENT_GONE)


def _worker_main(argv: list[str]) -> None:
    """Serve tasks from the parent until its task pipe closes (run by ``_BOOT``)."""
    task_fd, result_fd, parent = (int(value) for value in argv)
    # Ctrl-C reaches the whole process group: the parent handles it and kills the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    lock = threading.Lock()
    unanswered = 0  # messages received and not answered yet

    def receive() -> None:
        # Reads ahead, so that end-of-file is seen even while a task runs. The parent closes
        # the pipe only once every message is answered: end-of-file before means it is gone.
        nonlocal unanswered
        while True:
            try:
                data = tasks.recv_bytes()
            except (EOFError, OSError):
                with lock:
                    if unanswered:
                        os._exit(_EXIT_PARENT_GONE)
                inbox.put(None)
                return
            with lock:
                unanswered += 1
            inbox.put(data)

    def reply(message: tuple[Any, ...]) -> None:
        nonlocal unanswered
        try:
            data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
            if not message[0]:
                pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        except Exception as exc:
            failure = RuntimeError(f"the worker's result cannot be sent back: {exc!r}")
            text = message[-1] if not message[0] else traceback.format_exc()
            data = pickle.dumps((False, failure, text))
        with lock:
            unanswered -= 1  # before sending: the parent may close the pipe right after
        try:
            results.send_bytes(data)
        except OSError:  # the parent is gone
            os._exit(_EXIT_PARENT_GONE)

    threading.Thread(target=receive, daemon=True).start()
    try:
        sys_path, init = pickle.loads(_next(inbox))
        sys.path[:] = sys_path
        initializer, initargs = pickle.loads(init)
        if initializer is not None:
            initializer(*initargs)
    except BaseException:
        reply((False, traceback.format_exc()))
        return
    reply((True, None))
    while (data := inbox.get()) is not None:
        try:
            fn, args, kwargs = pickle.loads(data)
            message: tuple[Any, ...] = (True, fn(*args, **kwargs), None)
        except BaseException as exc:
            message = (False, exc, traceback.format_exc())
        reply(message)


def _next(inbox: queue.SimpleQueue[bytes | None]) -> bytes:
    data = inbox.get()
    if data is None:
        raise EOFError("the parent closed the task pipe")
    return data
