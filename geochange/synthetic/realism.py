"""Realism options of the synthetic scenes: the ways real bi-temporal pairs differ from clean ones.

Every option is off by default (``Realism()`` renders the same scene, bit for bit, as before
these options existed). Each perturbation is a pure function of the seed, of scene-level objects
(buildings, parcels) and of absolute pixel coordinates, never of the block being rendered, so a
scene with realism on is still identical for any ``block_size`` and any number of ``workers``.

Labels always refer to the **pre-date grid**: ``semantic_pre``, ``semantic_post`` and ``change``
describe the ground (building footprints, not leaning roofs) at the pixel positions of
``pre.tif``; only the post image moves with the misregistration, and only roofs move with the
lean.

The perturbations (units in brackets):

* :class:`Misregistration`: the post image is rendered at pixel position + shift (pixels),
  plus an optional smooth warp varying over the scene, as orthorectification errors do.
* :class:`Radiometry`: per-date, per-band gain, offset (digital numbers) and gamma, and haze.
* :class:`Phenology`: the post date is seasonally different: green fields brown, trees leaf-off,
  lawns dry.
* :class:`SunAngle`: the post date's sun is rotated (degrees) and its shadows lengthened.
* :class:`Lean`: off-nadir view: each date's roofs are displaced from their footprints by a
  per-date vector proportional to the building's height, with the facade visible in between.
* :class:`Distractors`: changes that are not building change: cars on roads, crop rotation,
  water-level change, construction sites, re-roofed buildings. The binary change map marks them
  0; the semantic maps keep their true classes (a flooded field is cropland before and water
  after, a re-roofed building is a building on both dates).

:data:`PRESETS` holds the named mixes (``"none"``, ``"levir"``); :func:`resolve_realism` turns
a preset name, the name of one perturbation (the preset ``"levir"``'s setting of it, alone), a
dict or a :class:`Realism` into a :class:`Realism`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from geochange.errors import ConfigurationError

__all__ = [
    "PERTURBATIONS",
    "PRESETS",
    "Distractors",
    "Lean",
    "Misregistration",
    "Phenology",
    "Radiometry",
    "Realism",
    "SunAngle",
    "resolve_realism",
]


@dataclass(frozen=True)
class Misregistration:
    """Shift of the post image against the pre image (labels stay on the pre grid).

    Attributes:
        magnitude: length of the constant shift, in pixels (sub-pixel to a few pixels).
        angle: direction of the shift in degrees (0: along +columns, 90: along +rows); None
            draws it from the seed. Post pixel ``(r, c)`` shows the ground of pre pixel
            ``(r + magnitude * sin(angle), c + magnitude * cos(angle))``.
        warp: amplitude of an extra shift varying smoothly over the scene, in pixels per axis
            (0: a rigid shift).
        warp_scale: correlation length of the warp, in pixels.
    """

    magnitude: float = 1.5
    angle: float | None = None
    warp: float = 0.0
    warp_scale: float = 1500.0


@dataclass(frozen=True)
class Radiometry:
    """Per-date, per-band radiometric differences, drawn from the seed.

    Each date and band gets ``v -> 255 * (v / 255) ** gamma * gain + offset``, then haze blends
    the image towards a bright airlight by a smooth field of up to ``haze``.

    Attributes:
        gain: gains are drawn in ``[1 - gain, 1 + gain]`` (relative).
        offset: offsets are drawn in ``[-offset, offset]`` (digital numbers, 0-255).
        gamma: gammas are drawn in ``[exp(-gamma), exp(gamma)]``.
        haze: largest haze fraction (0-1) of a date, varying over the scene.
    """

    gain: float = 0.15
    offset: float = 12.0
    gamma: float = 0.2
    haze: float = 0.25


@dataclass(frozen=True)
class Phenology:
    """Seasonal vegetation at the post date.

    Attributes:
        strength: 0 (same season) to 1 (fields fully brown, trees fully leaf-off, lawns dry).
    """

    strength: float = 0.8


@dataclass(frozen=True)
class SunAngle:
    """Different sun at the post date: shadow direction and length of buildings.

    Attributes:
        rotation: rotation of the post shadows against the scene's default, in degrees.
        length: factor on the post shadow length (> 1: lower sun).
    """

    rotation: float = 70.0
    length: float = 1.6


@dataclass(frozen=True)
class Lean:
    """Off-nadir view: roofs displaced from their footprints on each date.

    Attributes:
        strength: roof displacement in pixels per unit of building height (the height unit is
            the shadow length of the building at the default sun, 3-17 pixels).
        angles: direction of the displacement per date in degrees (0: +columns, 90: +rows);
            None draws both from the seed.
    """

    strength: float = 0.25
    angles: tuple[float, float] | None = None


@dataclass(frozen=True)
class Distractors:
    """Changes that are not building change (binary label 0, true classes in semantic maps).

    Attributes:
        cars: probability that a 24-pixel cell whose centre is on a road holds a car, per date.
        crop_rotation: share of cropland parcels sown with another crop at the post date
            (other colour, furrows turned by 90 degrees; cropland on both dates).
        water_level: rise of the water at the post date: river banks move outwards by this many
            pixels and lakes grow (negative: the water recedes, leaving bare land).
        construction: share of bare-land parcels that are construction sites at the post date
            (pits, material stacks; bare land on both dates).
        reroof: share of buildings standing at both dates whose roof has a new colour at the post
            date.
    """

    cars: float = 0.5
    crop_rotation: float = 0.3
    water_level: float = 4.0
    construction: float = 0.5
    reroof: float = 0.15


#: The perturbations, by field name of :class:`Realism`.
PERTURBATIONS: dict[str, type] = {
    "misregistration": Misregistration,
    "radiometry": Radiometry,
    "phenology": Phenology,
    "sun": SunAngle,
    "lean": Lean,
    "distractors": Distractors,
}


@dataclass(frozen=True)
class Realism:
    """Which perturbations a synthetic scene gets (None: off); see :mod:`.realism`.

    Attributes:
        misregistration: post image shift and warp (replaces the default sub-pixel shift).
        radiometry: per-date gain/offset/gamma per band and haze.
        phenology: seasonal vegetation at the post date.
        sun: post-date sun angle.
        lean: off-nadir roof displacement.
        distractors: changes that are not building change.
    """

    misregistration: Misregistration | None = None
    radiometry: Radiometry | None = None
    phenology: Phenology | None = None
    sun: SunAngle | None = None
    lean: Lean | None = None
    distractors: Distractors | None = None

    @property
    def enabled(self) -> bool:
        """True when any perturbation is on."""
        return any(getattr(self, name) is not None for name in PERTURBATIONS)

    def only(self, *names: str) -> Realism:
        """A copy keeping only the perturbations ``names`` (the others off)."""
        _check_names(names)
        return Realism(**{name: getattr(self, name) for name in names})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: perturbations that are on, with their parameters."""
        out: dict[str, Any] = {}
        for name in PERTURBATIONS:
            value = getattr(self, name)
            if value is not None:
                out[name] = {
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(value).items()
                }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Realism:
        """Build from ``{perturbation: {parameter: value} | True | None}``.

        ``True`` (or ``{}``) turns a perturbation on with its default parameters.

        Raises:
            ConfigurationError: an unknown perturbation or parameter.
        """
        _check_names(data)
        fields: dict[str, Any] = {}
        for name, value in data.items():
            kind = PERTURBATIONS[name]
            if value is None or value is False:
                continue
            if isinstance(value, kind):
                fields[name] = value
                continue
            params = {} if value is True else value
            if not isinstance(params, Mapping):
                raise ConfigurationError(
                    f"realism {name!r} must be a dict of parameters, True or None, got {value!r}"
                )
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = sorted(set(params) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown parameter(s) {unknown} of realism {name!r}; known: {sorted(known)}"
                )
            if params.get("angles") is not None:
                params = {**params, "angles": tuple(float(a) for a in params["angles"])}
            fields[name] = kind(**params)
        return cls(**fields)


def _check_names(names: Any) -> None:
    unknown = sorted(set(names) - set(PERTURBATIONS))
    if unknown:
        raise ConfigurationError(
            f"unknown realism perturbation(s) {unknown}; known: {sorted(PERTURBATIONS)}"
        )


#: Named mixes. ``"levir"`` resembles the pairs of LEVIR-CD-like city datasets: a 1.5-pixel
#: shift with a 1-pixel warp, strong radiometric and seasonal differences, another sun, a
#: moderate off-nadir lean and every distractor.
PRESETS: dict[str, Realism] = {
    "none": Realism(),
    "levir": Realism(
        misregistration=Misregistration(magnitude=1.5, warp=1.0),
        radiometry=Radiometry(),
        phenology=Phenology(),
        sun=SunAngle(),
        lean=Lean(),
        distractors=Distractors(),
    ),
}


def resolve_realism(value: Realism | str | Mapping[str, Any] | None) -> Realism:
    """The :class:`Realism` of ``make_scene(realism=...)``.

    Args:
        value: None (off), a preset name of :data:`PRESETS`, the name of one perturbation
            (``"lean"``: the ``"levir"`` preset's lean alone), a dict for
            :meth:`Realism.from_dict`, or a :class:`Realism`.

    Returns:
        The options.

    Raises:
        ConfigurationError: an unknown name, perturbation or parameter, or an out-of-range one.
    """
    if value is None:
        realism = Realism()
    elif isinstance(value, Realism):
        realism = value
    elif isinstance(value, str):
        if value in PRESETS:
            realism = PRESETS[value]
        elif value in PERTURBATIONS:
            realism = PRESETS["levir"].only(value)
        else:
            raise ConfigurationError(
                f"unknown realism {value!r}: expected a preset {sorted(PRESETS)} or a "
                f"perturbation {sorted(PERTURBATIONS)}"
            )
    elif isinstance(value, Mapping):
        realism = Realism.from_dict(value)
    else:
        raise ConfigurationError(
            f"realism must be None, a name, a dict or a Realism, got {type(value).__name__}"
        )
    _check_ranges(realism)
    return realism


def _check_ranges(r: Realism) -> None:
    checks: list[tuple[str, float, float, float]] = []
    if r.misregistration is not None:
        m = r.misregistration
        checks += [("misregistration.magnitude", m.magnitude, 0, 16)]
        checks += [("misregistration.warp", m.warp, 0, 16)]
        checks += [("misregistration.warp_scale", m.warp_scale, 16, math.inf)]
    if r.radiometry is not None:
        q = r.radiometry
        checks += [("radiometry.gain", q.gain, 0, 0.9), ("radiometry.offset", q.offset, 0, 100)]
        checks += [("radiometry.gamma", q.gamma, 0, 2), ("radiometry.haze", q.haze, 0, 1)]
    if r.phenology is not None:
        checks += [("phenology.strength", r.phenology.strength, 0, 1)]
    if r.sun is not None:
        checks += [("sun.length", r.sun.length, 0, 4)]
    if r.lean is not None:
        checks += [("lean.strength", r.lean.strength, 0, 1)]
    if r.distractors is not None:
        d = r.distractors
        for name in ("cars", "crop_rotation", "construction", "reroof"):
            checks.append((f"distractors.{name}", getattr(d, name), 0, 1))
        checks.append(("distractors.water_level", d.water_level, -30, 30))
    for name, v, lo, hi in checks:
        if not (isinstance(v, int | float) and lo <= v <= hi):
            raise ConfigurationError(f"realism {name} must be in [{lo}, {hi}], got {v!r}")


def seeded_shift(seed: int, m: Misregistration) -> tuple[float, float]:
    """The constant post shift (rows, cols) in pixels of a misregistration under ``seed``."""
    if m.angle is None:
        angle = np.random.default_rng([seed, 0x5A1F7]).uniform(0, 2 * math.pi)
    else:
        angle = math.radians(m.angle)
    return (m.magnitude * math.sin(angle), m.magnitude * math.cos(angle))


def seeded_lean(seed: int, lean: Lean) -> tuple[tuple[float, float], tuple[float, float]]:
    """Roof displacement per unit height (rows, cols) of each date under ``seed``."""
    if lean.angles is None:
        angles = np.random.default_rng([seed, 0x1EA7]).uniform(0, 2 * math.pi, size=2)
    else:
        angles = np.radians(np.asarray(lean.angles, dtype=np.float64))
    s = lean.strength
    return (
        (s * math.sin(angles[0]), s * math.cos(angles[0])),
        (s * math.sin(angles[1]), s * math.cos(angles[1])),
    )


def seeded_radiometry(seed: int, q: Radiometry, bands: int) -> dict[str, np.ndarray]:
    """Per-date (axis 0), per-band (axis 1) gain, offset and gamma, and per-date haze."""
    rng = np.random.default_rng([seed, 0x2AD1])
    shape = (2, bands)
    return {
        "gain": (1 + q.gain * rng.uniform(-1, 1, shape)).astype(np.float32),
        "offset": (q.offset * rng.uniform(-1, 1, shape)).astype(np.float32),
        "gamma": np.exp(q.gamma * rng.uniform(-1, 1, shape)).astype(np.float32),
        "haze": (q.haze * rng.uniform(0.4, 1.0, 2)).astype(np.float32),
    }
