"""Learning-rate and loss-weight schedules (geochange.trainers.schedules)."""

from __future__ import annotations

import pytest

from geochange.trainers.schedules import linear_schedule, lr_factor


def test_lr_schedules() -> None:
    cosine = {"warmup": 2, "total": 10, "kind": "cosine", "floor": 0.0}
    assert lr_factor(0, **cosine) == pytest.approx(0.5)
    assert lr_factor(1, **cosine) == pytest.approx(1.0)
    assert lr_factor(2, **cosine) == pytest.approx(1.0)
    assert lr_factor(6, **cosine) == pytest.approx(0.5)  # halfway through the 8 decay steps
    assert lr_factor(10, **cosine) == pytest.approx(0.0, abs=1e-12)
    poly = {"warmup": 0, "total": 10, "kind": "poly", "power": 2.0, "floor": 0.1}
    assert lr_factor(5, **poly) == pytest.approx(0.1 + 0.9 * 0.25)


def test_linear_schedule() -> None:
    assert linear_schedule(0, start=1.0, end=0.0, steps=10) == 1.0
    assert linear_schedule(5, start=1.0, end=0.0, steps=10) == pytest.approx(0.5)
    assert linear_schedule(50, start=1.0, end=0.0, steps=10) == 0.0
    assert linear_schedule(3, start=0.0, end=2.0, steps=4) == pytest.approx(1.5)
    assert linear_schedule(7, start=0.3, end=0.0, steps=0) == 0.3
