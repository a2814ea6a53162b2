"""A Dask client for ``geochange predict``: an existing scheduler, or a local cluster.

:func:`dask_client` is what ``--dask-scheduler ADDRESS`` and ``--dask-local-workers N`` open:
a client of a running scheduler, or a ``distributed.LocalCluster`` of ``N`` worker processes
that is shut down when the block ends and whose workers die with the calling process (on Linux
the kernel kills them when it dies, even by ``SIGKILL``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from geochange.errors import ConfigurationError

try:  # the 'distributed' extra; this module is only imported to open a client
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover
    WorkerPlugin = object  # type: ignore[misc,assignment]

__all__ = ["DieWithParent", "dask_client"]


class DieWithParent(WorkerPlugin):
    """Dask worker plugin: the worker process exits when the process ``parent`` is gone.

    Attributes:
        parent: Process id of the process that started the cluster.
    """

    name = "geochange-die-with-parent"

    def __init__(self, parent: int) -> None:
        """Remember the parent.

        Args:
            parent: The process whose death must end the worker.
        """
        self.parent = parent

    def setup(self, worker: Any) -> None:
        """Arm the kernel's parent-death signal in the worker process (Linux).

        Args:
            worker: The ``distributed.Worker``.
        """
        from geochange.parallel import _die_with_parent

        if os.getpid() != self.parent:  # a worker process, not a thread of the parent
            _die_with_parent(self.parent)


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, local_workers: int | None = None
) -> Iterator[Any | None]:
    """A ``dask.distributed`` client for :meth:`ChangePredictor.predict`'s ``client``.

    Args:
        scheduler: Address of a running scheduler (``tcp://host:8786``).
        local_workers: Start a ``LocalCluster`` of this many worker processes instead (each
            with ``cpu_count // N`` threads); it is closed when the block ends.

    Yields:
        The client, or None when neither is given (predict in this process).

    Raises:
        ConfigurationError: Both given, ``local_workers < 1``, or ``distributed`` missing.
    """
    if scheduler is None and local_workers is None:
        yield None
        return
    if scheduler is not None and local_workers is not None:
        raise ConfigurationError("give a Dask scheduler address or local workers, not both")
    if local_workers is not None and local_workers < 1:
        raise ConfigurationError(f"local Dask workers must be >= 1, got {local_workers}")
    try:
        import distributed
    except ImportError as error:
        raise ConfigurationError(
            "Dask scale-out needs the 'distributed' package: pip install 'geochange[distributed]'"
        ) from error
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout="30s"))
            except OSError as error:
                raise ConfigurationError(
                    f"cannot reach the Dask scheduler at {scheduler!r}: {error}"
                ) from error
        else:
            assert local_workers is not None
            threads = max(1, (os.cpu_count() or 1) // local_workers)
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=local_workers,
                    threads_per_worker=threads,
                    processes=True,
                    dashboard_address=":0",  # any free port: no clash with a running one
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
            client.register_plugin(DieWithParent(os.getpid()))
        yield client
