"""Lightning datamodules: scene pairs, benchmark folders and generated scenes.

:class:`ChangeDataModule` (``change.py``) is the one datamodule; ``geo.py`` opens, splits and
samples GeoTIFF scenes for it, ``folder.py`` opens benchmark folders
(:class:`FolderChangeDataModule`), ``synthetic.py`` generates scenes
(:class:`SyntheticSceneDataModule`).
"""

from geochange.datamodules.change import (
    ChangeDataModule,
    stack_unlabeled,
    stack_unlabeled_with_pseudo,
)
from geochange.datamodules.folder import FolderChangeDataModule
from geochange.datamodules.synthetic import SyntheticSceneDataModule

__all__ = [
    "ChangeDataModule",
    "FolderChangeDataModule",
    "SyntheticSceneDataModule",
    "stack_unlabeled",
    "stack_unlabeled_with_pseudo",
]
