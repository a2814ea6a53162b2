"""Lightning datamodules: :class:`ChangeDataModule` for scene pairs and benchmark folders."""

from geochange.datamodules.change import ChangeDataModule, stack_unlabeled

__all__ = ["ChangeDataModule", "stack_unlabeled"]
