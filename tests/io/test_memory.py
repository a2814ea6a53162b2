"""geochange.io.memory: bounding glibc's heap growth."""


def test_bound_malloc_growth_applies_on_linux_glibc() -> None:
    import platform
    import sys

    from geochange.io import bound_malloc_growth, worker_init_bound_malloc

    applied = bound_malloc_growth()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied is True
        worker_init_bound_malloc(0)  # idempotent, as DataLoader workers call it
        assert bound_malloc_growth() is True
    else:
        assert applied is False
