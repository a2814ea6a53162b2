"""Generated scenes for the change datamodule: a synthetic scene written on first use.

:class:`SyntheticSceneDataModule` makes a config run out of the box: it writes a scene with
:func:`geochange.synthetic.make_scene` (or reuses the one already there) and reads it like
real rasters.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from geochange.datamodules.change import ChangeDataModule
from geochange.errors import ConfigurationError


class SyntheticSceneDataModule(ChangeDataModule):
    """A :class:`ChangeDataModule` over a synthetic scene, generated on first use.

    The scene (:func:`geochange.synthetic.make_scene`) is written to ``root`` on first use,
    then read through the geo path like real rasters. An existing scene is reused when its
    ``scene.json`` records the requested ``height``, ``width``, ``scene_seed``, ``bands`` and
    ``realism``
    (every scene holds both binary and semantic labels, so ``task`` never needs a new one).
    Otherwise it is regenerated in place, with a warning, but only when ``root`` holds nothing
    but that earlier scene's files; a folder with other files, or with scene file names but no
    ``scene.json``, is refused with a :class:`~geochange.errors.ConfigurationError`, so no user
    file is ever overwritten.

    Args:
        root: Folder of the scene (created if needed).
        height: Scene height in pixels.
        width: Scene width in pixels.
        scene_seed: Seed of the generated content.
        bands: Bands per date.
        task: ``"binary"`` (change labels) or ``"semantic"`` (also per-date class rasters).
        realism: realism of the generated scene (:func:`geochange.synthetic.make_scene`): None
            or ``"none"``, a preset such as ``"levir"``, one perturbation's name, or a dict.
        **kwargs: :class:`ChangeDataModule` options (``patch_size``, ``batch_size``,
            ``samples_per_epoch``, ``num_workers``, ``splits``, ``balanced``,
            ``normalization``, ``augment``, ``per_date_shift``, ``seed``, ...).
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        height: int = 2048,
        width: int = 2048,
        scene_seed: int = 0,
        bands: int = 3,
        task: Literal["binary", "semantic"] = "binary",
        realism: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        scene = _synthetic_scene(Path(root), height, width, scene_seed, bands, realism)
        semantic = task == "semantic"
        super().__init__(
            pre=str(scene.pre),
            post=str(scene.post),
            change=str(scene.change),
            semantic_pre=str(scene.semantic_pre) if semantic else None,
            semantic_post=str(scene.semantic_post) if semantic else None,
            **kwargs,
        )


def _synthetic_scene(
    folder: Path, height: int, width: int, seed: int, bands: int, realism: Any = None
) -> Any:
    """The scene in ``folder`` if it matches the request, else a new one (see the class)."""
    from affine import Affine

    from geochange.io import atomic_output, partial_path
    from geochange.synthetic import MANIFEST_NAME, Scene, make_scene, resolve_realism

    options = resolve_realism(realism)
    wanted: dict[str, Any] = {"height": height, "width": width, "seed": seed, "bands": bands}
    if options.enabled:
        wanted["realism"] = options.to_dict()
    if (folder / MANIFEST_NAME).exists():
        scene = Scene.load(folder)
        found: dict[str, Any] = {"height": scene.height, "width": scene.width}
        found["seed"], found["bands"] = scene.seed, scene.bands
        if scene.realism:
            found["realism"] = scene.realism
        if found == wanted:
            return scene
        names = {MANIFEST_NAME, *(p.name for p in _scene_files(scene))}
        # Leftovers of an interrupted generation are the generator's too.
        ours = names | {partial_path(n).name for n in names} | {f".{n}.tiled.tif" for n in names}
        others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        describe = ", ".join(f"{k}={v}" for k, v in found.items())
        asked = ", ".join(f"{k}={v}" for k, v in wanted.items())
        if others:
            raise ConfigurationError(
                f"{str(folder)!r} holds a synthetic scene with {describe}, not the requested "
                f"{asked}, and other files too ({', '.join(others[:5])}), so it is not "
                "regenerated there: use another root, or the scene's own height/width/"
                "scene_seed/bands"
            )
        warnings.warn(
            f"regenerating the synthetic scene in {str(folder)!r}: it had {describe}, the "
            f"requested scene has {asked}",
            UserWarning,
            stacklevel=3,
        )
        # A regeneration that fails half way must not leave a manifest describing other files;
        # one that fails before writing anything (bad arguments) keeps the old scene usable.
        manifest = folder / MANIFEST_NAME
        text = manifest.read_text()
        before = {p: _stamp(p) for p in _scene_files(scene)}
        manifest.unlink()
        try:
            return make_scene(folder, height, width, seed=seed, bands=bands, realism=options)
        except BaseException:
            if all(_stamp(p) == stamp for p, stamp in before.items()):
                with atomic_output(manifest) as tmp:
                    tmp.write_text(text)
            raise
    if folder.is_dir():
        # Only the file names matter here: a placeholder scene rooted in the folder gives them.
        placeholder = Scene(folder, 0, 0, "", 0.0, Affine.identity())
        clash = sorted(p.name for p in _scene_files(placeholder) if p.exists())
        if clash:
            raise ConfigurationError(
                f"{str(folder)!r} holds {', '.join(clash)} but no {MANIFEST_NAME}, so they may "
                "not be a generated scene and are not overwritten: use another root, or remove "
                "them if they are left over from an interrupted generation"
            )
    return make_scene(folder, height, width, seed=seed, bands=bands, realism=options)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _scene_files(scene: Any) -> list[Path]:
    from geochange.io import sidecar_paths

    labels = [scene.change, scene.semantic_pre, scene.semantic_post]
    # The label rasters' GIS sidecars (category names, QGIS styles) are the generator's too.
    sidecars = [path for raster in labels for path in sidecar_paths(raster)]
    return [scene.pre, scene.post, *labels, scene.changed_buildings, *sidecars]
