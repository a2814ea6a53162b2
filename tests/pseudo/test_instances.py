"""geochange.pseudo.instances: instances joined across block seams decide events scene-wide."""

from __future__ import annotations

import numpy as np

from geochange.pseudo import (
    change_event_generation,
    generate_pseudo_labels,
)
from tests.pseudo.scenes import (
    BUILDING,
    OTHERS,
    read,
    write_raster,
)


def test_instance_crossing_block_edges(tmp_path):
    pre = np.full((64, 64), OTHERS, dtype=np.uint8)
    post = pre.copy()
    # An extended building: only inside the left block before, across the seam at x=32 after.
    # Per block, its right-hand piece overlaps nothing; over the scene it overlaps (IoU 12/26).
    pre[4:12, 20:32] = BUILDING
    post[4:12, 20:46] = BUILDING
    # A new building over the corner of four blocks.
    post[26:40, 26:40] = BUILDING
    # A demolished building that only touches the next block diagonally (8-connectivity).
    pre[44:50, 26:32] = BUILDING
    pre[50:53, 32:35] = BUILDING
    pre[52, 32] = OTHERS
    pre[50, 32] = BUILDING
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    out = tmp_path / "pseudo.tif"
    summary = generate_pseudo_labels(
        tmp_path / "pre.tif", tmp_path / "post.tif", out, change_classes="building", block_size=32
    )
    labels = read(out)
    np.testing.assert_array_equal(
        labels, change_event_generation(pre, post, change_classes=[BUILDING])
    )
    assert not labels[4:12].any()  # the extended building is no event
    assert labels[26:40, 26:40].all()
    assert labels[44:53].sum() == np.count_nonzero(pre[44:53] == BUILDING)
    assert (summary.instances_pre, summary.instances_post, summary.change_events) == (2, 2, 2)
