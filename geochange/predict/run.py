"""One file-to-file prediction run: plan, checks, lock, stripes, finalize.

:meth:`geochange.predict.ChangePredictor.predict` builds a :class:`_SceneRun` and runs it;
its methods are the phases of the run.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geochange.io import check_not_inputs, check_writable_dir, exclusive_lock, partial_path
from geochange.predict.blend import blend_stripe
from geochange.predict.distributed import _dask_results
from geochange.predict.inference import model_fingerprint
from geochange.predict.outputs import output_class_names, output_specs
from geochange.predict.reader import RasterPair, resolve_window
from geochange.predict.result import PredictionResult
from geochange.predict.tiles import _compute_tiles, _rows_from, _TileResult, calibrate_on_scene
from geochange.predict.windows import ColumnStripe, TileGrid
from geochange.predict.writer import GeoTiffBandWriter, OutputSpec

if TYPE_CHECKING:  # pragma: no cover
    from geochange.predict.predictor import ChangePredictor

SIDECAR_NAME = ".geochange-predict-progress.json"
#: Held (``flock``) by the run writing into an output directory; it names the holder.
LOCK_NAME = ".geochange-predict.lock"


@dataclass(frozen=True)
class _PredictOptions:
    """The per-call arguments of :meth:`ChangePredictor.predict` (see there)."""

    window: Window | Sequence[float] | None = None
    write_probability: bool = True
    resume: bool = False
    client: Any = None
    blocks_per_worker: int = 4
    crs: str | CRS | None = None
    res: float | tuple[float, float] | None = None
    overwrite: bool = False


@dataclass
class _Plan:
    """Everything a prediction run is checked against before any output is created."""

    pair: RasterPair
    out_dir: Path
    origin: tuple[int, int]  # (row, col) of the window in the pre image
    height: int
    width: int
    transform: Affine
    grid: TileGrid
    channels: int
    classes: int
    names: list[str]
    specs: list[OutputSpec]
    stripes: list[ColumnStripe]


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Exclude the objects that exist now from the garbage collector's passes, for a while.

    The loop over tiles allocates many short-lived containers, so the collector runs often,
    and its oldest-generation passes walk every object the process holds (torch and the
    engines: hundreds of thousands). Profiled at 4096^2 with OpenVINO: ~5 % of the main
    thread's time; frozen (``gc.freeze``), the passes only see the objects made since, and
    the pipeline ran ~3 % faster. Everything is unfrozen (collectable again) afterwards.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _SceneRun:
    """One :meth:`~geochange.predict.ChangePredictor.predict` call; methods are its phases."""

    def __init__(
        self,
        predictor: ChangePredictor,
        pre: str | os.PathLike[str],
        post: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        options: _PredictOptions,
    ) -> None:
        self.predictor = predictor
        self.pre = pre
        self.post = post
        self.out_dir = Path(out_dir)
        self.options = options

    def run(self) -> PredictionResult:
        """Plan, check, lock, predict stripe by stripe, finalize; see ``predict``."""
        p, options = self.predictor, self.options
        started = time.perf_counter()
        pair = RasterPair.open(
            self.pre,
            self.post,
            bands=p.bands,
            expected_channels=p.in_channels,
            crs=options.crs,
            resolution=options.res,
        )
        # Everything that can be checked is checked before anything is created.
        plan = self.plan(pair)
        sidecar = plan.out_dir / SIDECAR_NAME
        lock = plan.out_dir / LOCK_NAME
        written = [
            path for s in plan.specs for path in (s.path, s.cog_path, s.tiled_path, *s.sidecars)
        ]
        check_not_inputs(
            [*written, sidecar, partial_path(sidecar), lock],
            {"pre image": self.pre, "post image": self.post, "checkpoint": p.checkpoint},
        )
        check_writable_dir(plan.out_dir)
        # One run per directory: partial and sidecar names are fixed (a resumed run must find
        # them), so this lock is what keeps two runs from mixing their rows.
        cleanup = contextlib.ExitStack()
        cleanup.enter_context(exclusive_lock(lock, what="geochange predict"))
        try:
            writer = GeoTiffBandWriter(
                plan.specs,
                crs=pair.crs,
                transform=plan.transform,
                height=plan.height,
                width=plan.width,
                sidecar=sidecar,
                fingerprint=self.fingerprint(plan),
                resume=options.resume,
                stripes=len(plan.stripes),
                overwrite=options.overwrite,
            )
        except BaseException:
            cleanup.close()
            raise
        try:
            with frozen_gc():
                tiles = self.predict_stripes(plan, writer)
            paths = writer.finalize()
        finally:
            try:
                writer.close()
            finally:
                pair.close()
                cleanup.close()
        return PredictionResult(
            change=paths["change"],
            probability=paths.get("probability"),
            semantic_pre=paths.get("semantic_pre"),
            semantic_post=paths.get("semantic_post"),
            transition=paths.get("transition"),
            class_names=plan.names or None,
            crs=pair.crs,
            transform=plan.transform,
            height=plan.height,
            width=plan.width,
            tiles=tiles,
            seconds=time.perf_counter() - started,
        )

    def plan(self, pair: RasterPair) -> _Plan:
        """Window, tile grid, model outputs, output specs and stripes of the run."""
        p = self.predictor
        win = resolve_window(pair, self.options.window)
        height, width = int(win.height), int(win.width)
        origin = (int(win.row_off), int(win.col_off))
        grid = p._grid(height, width)
        channels, classes = p._inferencer.probe_channels(
            len(pair.bands), (grid.tile_height, grid.tile_width)
        )
        # int8: quantized and checked on this scene before any output exists.
        calibrate_on_scene(
            p._inferencer,
            pair,
            grid,
            count=p.calibration_tiles,
            threshold=p.threshold,
            origin=origin,
        )
        # stacklevel: the warning names the caller of predict().
        names = output_class_names(p.class_names, classes, stacklevel=5) if classes else []
        specs = output_specs(
            self.out_dir,
            classes,
            names,
            write_probability=self.options.write_probability,
            probability_dtype=p.probability_dtype,
        )
        return _Plan(
            pair=pair,
            out_dir=self.out_dir,
            origin=origin,
            height=height,
            width=width,
            transform=pair.transform @ Affine.translation(origin[1], origin[0]),
            grid=grid,
            channels=channels,
            classes=classes,
            names=names,
            specs=specs,
            stripes=p._stripes(grid, channels, classes),
        )

    def fingerprint(self, plan: _Plan) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one (inputs, settings, model)."""
        p, pre, post, origin = self.predictor, self.pre, self.post, plan.origin
        return {
            "pre": [str(Path(pre).resolve()), os.stat(pre).st_mtime_ns, os.stat(pre).st_size],
            "post": [str(Path(post).resolve()), os.stat(post).st_mtime_ns, os.stat(post).st_size],
            "window": [origin[0], origin[1], plan.height, plan.width],
            "grid_crs": plan.pair.crs.to_string() if plan.pair.crs else None,
            "transform": list(plan.transform)[:6],
            "grid": [p.tile_size, p.overlap, p.margin, p.blend, p.semantic_blend, p.tta],
            "outputs": [s.key for s in plan.specs],
            "threshold": p.threshold,
            "precision": p.precision,
            "engine": p.engine,
            "probability_dtype": p.probability_dtype,
            "model": model_fingerprint(p.model),
            "stripes": [[st.band_x0, st.out_x0, st.out_x1] for st in plan.stripes],
        }

    def predict_stripes(self, plan: _Plan, writer: GeoTiffBandWriter) -> int:
        """Infer, blend and write the stripes still to do; return the tiles inferred."""
        p = self.predictor
        wanted = {s.key for s in plan.specs}
        decode = p._decoder(plan.classes, p.probability_dtype, wanted)
        # The stripes (or, resuming, their rest) still to predict, with their tile rows.
        work: list[tuple[int, ColumnStripe, list[int]]] = []
        for index in range(writer.stripe, len(plan.stripes)):
            skip = writer.rows_done if index == writer.stripe else 0
            work.append((index, plan.stripes[index], _rows_from(plan.grid, skip)))
        total = sum(len(rows) * len(stripe.cols) for _, stripe, rows in work)
        tiles = 0
        with p._progress(total) as bar:
            dask_blocks = self._dask_blocks(plan, work, bar)
            for index, stripe, rows in work:
                skip = writer.begin_stripe(index, stripe.out_x0, stripe.out_x1 - stripe.out_x0)
                assembler = p._assembler(
                    plan.grid, plan.channels, plan.classes, decode, writer.write, stripe, skip
                )
                if dask_blocks is not None:
                    block_index, blocks = next(dask_blocks)
                    assert block_index == index
                    stream: Iterable[_TileResult] = (t for _, ts in blocks for t in ts)
                else:
                    stream = _compute_tiles(
                        p._inferencer,
                        plan.pair,
                        plan.grid,
                        rows,
                        plan.channels,
                        cols=stripe.cols,
                        origin=plan.origin,
                        batch_size=p.batch_size,
                        num_workers=p.num_workers,
                        pin_memory=p.device.type == "cuda",
                        progress=bar,
                    )
                tiles += blend_stripe(assembler, rows[0], stream)
        return tiles

    def _dask_blocks(
        self, plan: _Plan, work: list[tuple[int, ColumnStripe, list[int]]], bar: Any
    ) -> Any:
        """With a Dask client, the weighted tiles of each stripe's blocks, grouped by stripe."""
        if self.options.client is None:
            return None
        p = self.predictor
        results = _dask_results(
            self.options.client,
            p._inferencer,
            plan.pair,
            plan.grid,
            work,
            plan.channels,
            plan.origin,
            batch_size=p.batch_size,
            gdal_cache_mb=p.gdal_cache_mb,
            blocks_per_worker=self.options.blocks_per_worker,
            bar=bar,
        )
        return groupby(results, key=itemgetter(0))
