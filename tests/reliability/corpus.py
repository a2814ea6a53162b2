"""A corpus of good and bad inputs, generated at test time, for the reliability suite.

One small synthetic scene (and a tiny checkpoint and prediction made from it) is the good
input; every bad input is derived from it, so a case differs from a working run in exactly
the property it names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.warp import calculate_default_transform, reproject

SIZE = 256


@dataclass(frozen=True)
class Corpus:
    """Paths of the generated inputs (attributes are files; ``root`` holds them all)."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        """``corpus.pre`` is ``root / "pre.tif"`` etc.; see :data:`FILES`."""
        if name in FILES:
            return self.root / FILES[name]
        raise AttributeError(name)


#: attribute -> file name inside the corpus folder.
FILES = {
    "pre": "scene/pre.tif",
    "post": "scene/post.tif",
    "change": "scene/change.tif",
    "semantic_pre": "scene/semantic_pre.tif",
    "semantic_post": "scene/semantic_post.tif",
    "polygons": "scene/changed_buildings.gpkg",
    "ckpt": "model.ckpt",
    "ckpt_4band": "model_4band.ckpt",
    "ckpt_evil": "evil.ckpt",
    "ckpt_random": "random.ckpt",
    "weights_evil": "evil.pth",
    "pred_change": "pred/change.tif",
    "pred_probability": "pred/probability.tif",
    "post_4band": "post_4band.tif",
    "post_crs_overlap": "post_crs_overlap.tif",
    "post_crs_apart": "post_crs_apart.tif",
    "post_coarse": "post_coarse.tif",
    "probability_coarse": "probability_coarse.tif",
    "pre_nan": "pre_nan.tif",
    "pre_float": "pre_float.tif",
    "post_float": "post_float.tif",
    "pre_allnodata": "pre_allnodata.tif",
    "empty": "empty.tif",
    "truncated_cog": "truncated_cog.tif",
    "truncated_tiled": "truncated_tiled.tif",
    "plain_tiled": "plain_tiled.tif",
    "nogeo": "nogeo.tif",
    "missing": "does_not_exist.tif",
    "regular_file": "regular_file.txt",
    "change_big": "change_big.tif",
    "mask_0_255": "mask_0_255.tif",
    "mask_7": "mask_7.tif",
    "mask_minus1": "mask_minus1.tif",
    "bad_polygons": "bad_polygons.gpkg",
    "polygons_apart": "polygons_apart.gpkg",
    "marker": "CODE_WAS_EXECUTED",
}


class _Evil:
    """Unpickling this runs a shell command that creates ``path`` (the marker file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _copy_raster(src_path: Path, dst: Path, data: np.ndarray, **profile: object) -> None:
    with rasterio.open(src_path) as src:
        meta = src.profile.copy()
    meta.update(driver="GTiff", count=data.shape[0], dtype=data.dtype, **profile)
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        if key not in profile:
            meta.pop(key, None)
    with rasterio.open(dst, "w", **meta) as out:
        out.write(data)


def _truncate(src: Path, dst: Path, keep: float) -> None:
    payload = src.read_bytes()
    dst.write_bytes(payload[: int(len(payload) * keep)])


def build(root: Path) -> Corpus:
    """Generate the corpus under ``root`` (a few seconds)."""
    import lightning
    import torch

    from geochange.synthetic import make_scene
    from geochange.trainers import ChangeTrainer

    root.mkdir(parents=True, exist_ok=True)
    scene = make_scene(root / "scene", SIZE, SIZE, seed=7)  # 3 new buildings
    corpus = Corpus(root)

    for name, bands in (("ckpt", 3), ("ckpt_4band", 4)):
        module = ChangeTrainer(
            model="fusion_unet",
            backbone="resnet18",
            in_channels=bands,
            normalization={"mean": [100.0] * bands, "std": [50.0] * bands},
            patch_size=128,
        )
        checkpoint = {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        }
        module.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, getattr(corpus, name))
    marker = corpus.marker
    torch.save({"state_dict": {"x": _Evil(marker)}}, corpus.ckpt_evil)
    torch.save({"conv.weight": _Evil(marker)}, corpus.weights_evil)
    corpus.ckpt_random.write_bytes(np.random.default_rng(0).bytes(4096))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "geochange",
            "predict",
            "--checkpoint",
            str(corpus.ckpt),
            "--pre",
            str(scene.pre),
            "--post",
            str(scene.post),
            "--out-dir",
            str(root / "pred"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    with rasterio.open(scene.post) as src:
        post = src.read()
        profile = src.profile.copy()
        crs, transform, bounds = src.crs, src.transform, src.bounds
    _copy_raster(scene.post, corpus.post_4band, np.concatenate([post, post[:1]]))
    # Same pixels in geographic coordinates: overlaps the pre image once reprojected.
    dst_crs = "EPSG:4326"
    dst_transform, width, height = calculate_default_transform(crs, dst_crs, SIZE, SIZE, *bounds)
    warped = np.zeros((post.shape[0], height, width), dtype=post.dtype)
    reproject(
        post,
        warped,
        src_transform=transform,
        src_crs=crs,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
    )
    meta = {
        **profile,
        "crs": dst_crs,
        "transform": dst_transform,
        "width": width,
        "height": height,
        "driver": "GTiff",
    }
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        meta.pop(key, None)
    with rasterio.open(corpus.post_crs_overlap, "w", **meta) as out:
        out.write(warped)
    _copy_raster(
        scene.post,
        corpus.post_crs_apart,
        post,
        crs="EPSG:4326",
        transform=from_origin(10.0, 10.0, 1e-5, 1e-5),
    )
    _copy_raster(
        scene.post,
        corpus.post_coarse,
        post[:, ::2, ::2],
        transform=transform @ transform.scale(2.0, 2.0),
        width=SIZE // 2,
        height=SIZE // 2,
    )

    with rasterio.open(corpus.pred_probability) as src:
        probability = src.read()
    _copy_raster(
        corpus.pred_probability,
        corpus.probability_coarse,
        probability[:, ::2, ::2],
        transform=transform @ transform.scale(2.0, 2.0),
        width=SIZE // 2,
        height=SIZE // 2,
    )

    with rasterio.open(scene.pre) as src:
        pre = src.read()
    pre_float = pre.astype(np.float32)
    _copy_raster(scene.pre, corpus.pre_float, pre_float, nodata=None)
    _copy_raster(scene.post, corpus.post_float, post.astype(np.float32), nodata=None)
    holed = pre_float.copy()
    holed[:, 100:116, 100:116] = np.nan
    _copy_raster(scene.pre, corpus.pre_nan, holed, nodata=None)
    _copy_raster(scene.pre, corpus.pre_allnodata, np.zeros_like(pre), nodata=0)
    corpus.empty.write_bytes(b"")
    _truncate(scene.pre, corpus.truncated_cog, 0.6)
    big = np.repeat(np.repeat(pre, 4, axis=1), 4, axis=2)  # 1024 px: many 64 px tiles
    _copy_raster(
        scene.pre,
        corpus.plain_tiled,
        big,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        width=SIZE * 4,
        height=SIZE * 4,
        transform=transform @ transform.scale(0.25),
    )
    _truncate(corpus.plain_tiled, corpus.truncated_tiled, 0.7)
    with rasterio.open(
        corpus.nogeo, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype=pre.dtype
    ) as out:
        out.write(pre)
    corpus.regular_file.write_text("a regular file, not a folder\n")

    with rasterio.open(scene.change) as src:
        change = src.read(1)
    _copy_raster(
        scene.change, corpus.mask_0_255, (change.astype(np.uint8) * 255)[None], nodata=None
    )
    big_change = np.repeat(np.repeat(change, 4, axis=0), 4, axis=1)[None]
    _copy_raster(
        scene.change,
        corpus.change_big,
        big_change,
        width=SIZE * 4,
        height=SIZE * 4,
        transform=transform @ transform.scale(0.25),
    )
    odd = change.astype(np.uint8).copy()
    odd[:8, :8] = 7
    _copy_raster(scene.change, corpus.mask_7, odd[None], nodata=None)
    minus = change.astype(np.int16)
    minus[:8, :8] = -1
    _copy_raster(scene.change, corpus.mask_minus1, minus[None], nodata=None)

    polygons = gpd.read_file(scene.changed_buildings, layer="changed_buildings")
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    x0, y0 = bounds.left + 20, bounds.bottom + 20
    bad = gpd.GeoDataFrame(
        {"change_type": ["new building"]},
        geometry=[shapely.affinity.translate(bowtie, x0, y0)],
        crs=crs,
    )
    gpd.GeoDataFrame(pd_concat(polygons, bad), crs=crs).to_file(corpus.bad_polygons)
    apart = polygons.copy()
    apart.geometry = apart.geometry.translate(1e6, 0)
    apart.to_file(corpus.polygons_apart)
    return corpus


def pd_concat(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows of ``a`` then ``b`` (columns of ``b`` only where ``a`` has them)."""
    import pandas as pd

    return pd.concat([a, b[[c for c in b.columns if c in a.columns]]], ignore_index=True)


def digest(paths: list[Path]) -> dict[str, str]:
    """sha256 of every existing file below ``paths`` (to prove inputs are untouched)."""
    out: dict[str, str] = {}
    for path in paths:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and not file.is_symlink():
                out[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out


def copy_scene(corpus: Corpus, dst: Path) -> Path:
    """A private copy of the scene folder (for cases whose output goes into it)."""
    shutil.copytree(corpus.root / "scene", dst)
    return dst
