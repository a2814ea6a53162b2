"""Block grid, edge strips and seam links of geochange._blockwise."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.ndimage as ndi
from rasterio.windows import Window

from geochange._blockwise import (
    BlockGrid,
    EdgeStrips,
    components,
    edge_strips,
    seam_links,
    seam_pairs,
)

# ---- grid


def _coverage(grid: BlockGrid) -> npt.NDArray[np.int64]:
    seen = np.zeros((grid.height, grid.width), np.int64)
    for block in grid:
        seen[
            block.row_off : block.row_off + block.height,
            block.col_off : block.col_off + block.width,
        ] += 1
    return seen


def test_grid_of_an_exact_multiple_has_equal_blocks() -> None:
    grid = BlockGrid(height=4, width=6, block_size=2)
    assert (grid.rows, grid.cols, len(grid)) == (2, 3, 6)
    assert {(b.height, b.width) for b in grid} == {(2, 2)}
    assert (_coverage(grid) == 1).all()


def test_grid_edge_blocks_keep_the_remainder() -> None:
    grid = BlockGrid(height=7, width=5, block_size=3)  # 1-pixel remainder rows, 2-pixel columns
    assert (grid.rows, grid.cols) == (3, 2)
    blocks = list(grid)
    assert [b.index for b in blocks] == list(range(6))
    assert [(b.row, b.col) for b in blocks] == [(r, c) for r in range(3) for c in range(2)]
    assert [(b.row_off, b.col_off, b.height, b.width) for b in blocks] == [
        (0, 0, 3, 3),
        (0, 3, 3, 2),
        (3, 0, 3, 3),
        (3, 3, 3, 2),
        (6, 0, 1, 3),
        (6, 3, 1, 2),
    ]
    assert (_coverage(grid) == 1).all()


@pytest.mark.parametrize(("height", "width", "size"), [(1, 1, 4), (9, 1, 4), (1, 9, 4), (13, 9, 4)])
def test_grid_covers_every_pixel_once(height: int, width: int, size: int) -> None:
    grid = BlockGrid(height, width, size)
    assert (_coverage(grid) == 1).all()
    assert len(list(grid)) == len(grid) == -(-height // size) * -(-width // size)


def test_grid_larger_block_than_raster_is_one_block() -> None:
    (block,) = BlockGrid(height=3, width=2, block_size=10)
    assert (block.row_off, block.col_off, block.height, block.width) == (0, 0, 3, 2)


def test_grid_windows_match_blocks() -> None:
    grid = BlockGrid(height=5, width=4, block_size=3)
    assert list(grid.windows()) == [
        Window(0, 0, 3, 3),
        Window(3, 0, 1, 3),
        Window(0, 3, 3, 2),
        Window(3, 3, 1, 2),
    ]
    assert grid.block(1, 1).window == Window(3, 3, 1, 2)


def test_grid_rejects_bad_sizes_and_indexes() -> None:
    with pytest.raises(ValueError, match="block_size"):
        BlockGrid(4, 4, 0)
    with pytest.raises(IndexError):
        BlockGrid(4, 4, 2).block(2, 0)


# ---- strips


def test_edge_strips_are_copies_of_the_edges() -> None:
    labels = np.array([[1, 0, 2, 2], [0, 0, 0, 3], [4, 4, 0, 3]], np.int32)
    strips = edge_strips(labels)
    np.testing.assert_array_equal(strips.top, [1, 0, 2, 2])
    np.testing.assert_array_equal(strips.bottom, [4, 4, 0, 3])
    np.testing.assert_array_equal(strips.left, [1, 0, 4])
    np.testing.assert_array_equal(strips.right, [2, 3, 3])
    labels[:] = 9  # the block's label image can be freed: the strips do not view it
    assert strips.top.max() == 2
    np.testing.assert_array_equal(strips.labels(), [1, 2, 3, 4])
    assert strips.labels().dtype == np.int32


def test_edge_strips_of_a_one_pixel_block() -> None:
    strips = edge_strips(np.array([[5]], np.int32))
    assert [s.tolist() for s in (strips.top, strips.bottom, strips.left, strips.right)] == [[5]] * 4


def test_edge_strips_to_global_ids() -> None:
    strips = EdgeStrips(
        top=np.array([0, 1, 2], np.int32),
        bottom=np.array([3, 0, 0], np.int32),
        left=np.array([0, 3], np.int32),
        right=np.array([2, 0], np.int32),
    )
    glob = strips.to_global(10)
    np.testing.assert_array_equal(glob.top, [-1, 10, 11])
    np.testing.assert_array_equal(glob.bottom, [12, -1, -1])
    np.testing.assert_array_equal(glob.left, [-1, 12])
    np.testing.assert_array_equal(glob.right, [11, -1])
    assert glob.top.dtype == np.int64


# ---- seam links


def _blockwise_objects(
    image: npt.NDArray[np.int32], block_size: int, connectivity: int
) -> tuple[npt.NDArray[np.int64], int]:
    """Label ``image`` (0 = background, >0 = class) block by block and join across seams."""
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    grid = BlockGrid(*image.shape, block_size)
    local: dict[tuple[int, int], npt.NDArray[np.int32]] = {}
    strips: dict[tuple[int, int], EdgeStrips] = {}
    keys: list[npt.NDArray[np.int64]] = []
    base = 0
    for block in grid:
        part = image[
            block.row_off : block.row_off + block.height,
            block.col_off : block.col_off + block.width,
        ]
        labels = np.zeros(part.shape, np.int32)
        count = 0
        for value in np.unique(part[part > 0]):  # one class at a time, like the callers
            lab, n = ndi.label(part == value, structure)
            labels[lab > 0] = lab[lab > 0] + count
            keys.append(np.full(n, value, np.int64))
            count += n
        local[block.row, block.col] = np.where(labels > 0, labels - 1 + base, -1)
        strips[block.row, block.col] = edge_strips(labels).to_global(base)
        base += count
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    sources, targets = seam_links(strips, grid.rows, grid.cols, key, connectivity)
    comp = components(base, sources, targets)
    scene = np.full(image.shape, -1, np.int64)
    for block in grid:
        ids = local[block.row, block.col]
        scene[
            block.row_off : block.row_off + block.height,
            block.col_off : block.col_off + block.width,
        ] = np.where(ids >= 0, comp[np.maximum(ids, 0)], -1)
    return scene, sources.size


def _whole_objects(image: npt.NDArray[np.int32], connectivity: int) -> npt.NDArray[np.int64]:
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = np.full(image.shape, -1, np.int64)
    count = 0
    for value in np.unique(image[image > 0]):
        lab, n = ndi.label(image == value, structure)
        out[lab > 0] = lab[lab > 0] - 1 + count
        count += n
    return out


def _same_partition(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> bool:
    if not np.array_equal(a < 0, b < 0):
        return False
    fa, fb = a[a >= 0], b[b >= 0]
    pairs = np.unique(np.stack([fa, fb]), axis=1).shape[1]
    return pairs == np.unique(fa).size == np.unique(fb).size


def test_object_inside_one_block_has_no_links() -> None:
    image = np.zeros((8, 8), np.int32)
    image[1:3, 1:3] = 1
    scene, links = _blockwise_objects(image, 4, 4)
    assert links == 0
    assert _same_partition(scene, _whole_objects(image, 4))


def test_object_crossing_one_seam_is_joined() -> None:
    image = np.zeros((8, 8), np.int32)
    image[1:3, 2:6] = 1  # across the vertical seam at column 4
    scene, links = _blockwise_objects(image, 4, 4)
    assert links == 2  # two pixel rows face each other
    assert np.unique(scene[scene >= 0]).size == 1


def test_object_crossing_a_block_corner_is_joined_over_four_blocks() -> None:
    image = np.zeros((8, 8), np.int32)
    image[2:6, 3:5] = 1  # a plus around the corner at (4, 4)
    image[3:5, 2:6] = 1
    scene, _ = _blockwise_objects(image, 4, 4)
    assert np.unique(scene[scene >= 0]).size == 1
    assert _same_partition(scene, _whole_objects(image, 4))


def test_ring_through_four_blocks_is_one_object_with_a_hole() -> None:
    image = np.ones((8, 8), np.int32)
    image[3:5, 3:5] = 0
    scene, _ = _blockwise_objects(image, 4, 8)
    assert np.unique(scene[scene >= 0]).size == 1


@pytest.mark.parametrize(("connectivity", "objects"), [(4, 2), (8, 1)])
def test_diagonal_contact_across_a_seam(connectivity: int, objects: int) -> None:
    image = np.zeros((8, 8), np.int32)
    image[3, 2] = 1  # above the horizontal seam at row 4 ...
    image[4, 3] = 1  # ... and one column to the right below it
    scene, _ = _blockwise_objects(image, 4, connectivity)
    assert np.unique(scene[scene >= 0]).size == objects
    assert _same_partition(scene, _whole_objects(image, connectivity))


@pytest.mark.parametrize(("connectivity", "objects"), [(4, 2), (8, 1)])
def test_diagonal_contact_across_a_block_corner(connectivity: int, objects: int) -> None:
    image = np.zeros((8, 8), np.int32)
    image[3, 3] = 1  # last pixel of block (0, 0)
    image[4, 4] = 1  # first pixel of block (1, 1): the two only meet at the corner
    scene, _ = _blockwise_objects(image, 4, connectivity)
    assert np.unique(scene[scene >= 0]).size == objects


def test_touching_pieces_of_different_keys_stay_apart() -> None:
    image = np.zeros((8, 8), np.int32)
    image[1:3, 1:4] = 1
    image[1:3, 4:7] = 2  # touches class 1 across the seam
    scene, links = _blockwise_objects(image, 4, 8)
    assert links == 0
    assert np.unique(scene[scene >= 0]).size == 2


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 16])
def test_random_scene_matches_whole_raster_labelling(connectivity: int, block_size: int) -> None:
    rng = np.random.default_rng(block_size * 10 + connectivity)
    image = (rng.random((13, 11)) < 0.45) * rng.integers(1, 3, (13, 11))
    image = image.astype(np.int32)
    scene, _ = _blockwise_objects(image, block_size, connectivity)
    assert _same_partition(scene, _whole_objects(image, connectivity))


def test_seam_pairs_offsets() -> None:
    first = np.array([0, -1, 1], np.int64)
    second = np.array([-1, 2, 3], np.int64)
    assert [(a.tolist(), b.tolist()) for a, b in seam_pairs(first, second, 4)] == [([1], [3])]
    assert [(a.tolist(), b.tolist()) for a, b in seam_pairs(first, second, 8)] == [
        ([1], [3]),  # straight across
        ([1], [2]),  # first[i + 1] against second[i]
        ([0], [2]),  # first[i] against second[i + 1]
    ]


def test_components_are_numbered_by_smallest_member() -> None:
    comp = components(5, np.array([4, 1], np.int64), np.array([0, 3], np.int64))
    np.testing.assert_array_equal(comp, [0, 1, 2, 1, 0])
    assert comp.dtype == np.int64
    assert components(0, np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0
    np.testing.assert_array_equal(
        components(3, np.zeros(0, np.int64), np.zeros(0, np.int64)), [0, 1, 2]
    )
