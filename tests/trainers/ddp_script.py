"""Two-process DDP (CPU, gloo) run used by test_ddp.py: python ddp_script.py OUT.json."""

from __future__ import annotations

import json
import sys
import warnings

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geochange.metrics import BinaryChangeMetrics
from geochange.trainers import ChangeTrainer


class Pairs(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, length: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for index in range(length):
            image = torch.rand(2, 3, 24, 24, generator=gen)
            mask = torch.zeros(24, 24, dtype=torch.long)
            side = 4 + 2 * index  # shards differ: rank 0 gets even, rank 1 odd indices
            mask[:side, :side] = 1
            image[1, :, :side, :side] += 1.0
            self.items.append({"image": image, "mask": mask})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"change": self.head(torch.relu(self.encoder(x.flatten(1, 2))))}


def reference(
    model: nn.Module, dataset: Dataset[dict[str, torch.Tensor]], indices: list[int]
) -> dict[str, float]:
    metric = BinaryChangeMetrics(sync_on_compute=False)  # rank 0 alone, after training
    model.eval()
    with torch.no_grad():
        for index in indices:
            sample = dataset[index]
            logits = model(sample["image"][None])["change"][:, 0]
            metric.update((logits > 0).long(), sample["mask"][None])
    return {key: float(value) for key, value in metric.compute().items()}


def main(out: str) -> None:
    pl.seed_everything(0)
    module = ChangeTrainer(model=Net(), loss="bce", lr=1e-2)
    train, val = Pairs(8, 0), Pairs(8, 1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the test runs with PYTHONWARNINGS=ignore
        trainer.fit(
            module,
            train_dataloaders=DataLoader(train, batch_size=2),
            val_dataloaders=DataLoader(val, batch_size=2),
        )
    if trainer.global_rank == 0:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        result = {
            "world_size": trainer.world_size,
            "logged": logged,
            "full": reference(module.model, val, list(range(8))),
            "rank0_only": reference(module.model, val, [0, 2, 4, 6]),
            "sync_dist_warnings": [str(w.message) for w in caught if "sync_dist" in str(w.message)],
        }
        with open(out, "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1])
