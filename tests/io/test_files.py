"""geochange.io.files: run locks (exclusive_lock)."""

import os

import pytest


def test_exclusive_lock_names_holder_and_warns_where_locks_are_unsupported(tmp_path, monkeypatch):
    import errno
    import fcntl

    from geochange.errors import OutputError
    from geochange.io import exclusive_lock

    lock = tmp_path / ".lock"
    with exclusive_lock(lock, what="test"):
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(OutputError, match=rf"in use by another test run \(pid {os.getpid()}"):
            with exclusive_lock(lock, what="test"):
                pass
    assert not lock.exists()
    with exclusive_lock(lock):  # released: it can be taken again
        pass

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="concurrent runs are not detected"):
        with exclusive_lock(lock):
            ran = True
    assert ran
