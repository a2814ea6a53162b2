"""Benchmarks in folder layout (LEVIR-CD, WHU-CD, DSIFN): train, test, and score published models.

Run ``python examples/folder_benchmark.py`` (a few minutes on a laptop CPU). By default it uses
the real LEVIR-CD and DSIFN crops in ``../shared/data`` (beside the repository; ``--root``
elsewhere) and

1. opens each benchmark folder with ``ChangeDataModule.from_folder`` (``A/``, ``B/``,
   ``label/`` with ``list/{split}.txt`` or ``{split}/A ...`` sub-folders). The sample crops
   only come with ``list/demo.txt``, so a split view (symbolic links plus list files) is made
   in ``--out``: by the ``train_``/``val_``/``test_`` name prefixes where present, else all
   pairs are test pairs;
2. trains a ``fusion_unet`` briefly on the training dataset (``--train``) with
   ``ChangeTrainer`` and tests it on the test split of every dataset (``--test``), giving
   IoU^c, F1, precision, recall, OA and kappa (``geochange.metrics``);
3. writes the model's change maps as PNGs beside the published ones and scores every
   ``predict_*`` folder (BIT, ChangeFormerV6, SiamUnet-diff/conc, UNet) on the same pairs
   with ``geochange.metrics.BinaryChangeMetrics``;
4. draws a figure of a few test pairs with the reference and the predictions.

On a full benchmark (e.g. ``--root /data --train LEVIR-CD --test LEVIR-CD,WHU-CD``) the
folders' own splits are used as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLITS = ("train", "val", "test")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the example."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED_DATA, help="folder of the datasets")
    parser.add_argument("--train", default="levircd", help="dataset to train on")
    parser.add_argument("--test", default="levircd,dsifn", help="comma-separated test datasets")
    parser.add_argument("--out", type=Path, default=Path("examples_output/folder_benchmark"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure-pairs", type=int, default=3, help="test pairs in the figure")
    return parser


def quiet_lightning() -> None:
    """Keep the output readable: no Lightning banners or third-party deprecation notices."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    warnings.filterwarnings("ignore", message=".*split .* skipped.*")


def find_dataset(root: Path, name: str) -> Path:
    """``root/name``, or the sample folder ``root/name-samples``."""
    for candidate in (root / name, root / f"{name}-samples"):
        if (candidate / "A").is_dir() or any((candidate / s / "A").is_dir() for s in SPLITS):
            return candidate
    raise SystemExit(f"no change-detection folder {name!r} (or {name}-samples) under {root}")


def pair_names(folder: Path) -> list[str]:
    """Names of the image pairs: every image in ``A/`` that has a post image and a label."""
    return sorted(
        p.stem
        for p in (folder / "A").iterdir()
        if p.is_file()
        and (folder / "B" / p.name).is_file()
        and (folder / "label" / p.name).is_file()
    )


def split_view(folder: Path, view: Path, *, training: bool) -> Path:
    """Return a folder ``from_folder`` can read with train/val/test splits.

    A folder that already has ``{split}/A`` sub-folders or ``list/{train,test}.txt`` is used as
    it is. Otherwise a view is made: links to ``A``, ``B`` and ``label`` and list files that
    split the pairs by their ``train_``/``val_``/``test_`` prefixes (LEVIR-CD crop names); without
    prefixes every pair is a test pair (a dataset used for testing only), or, for the training
    dataset, the pairs are split 60 / 20 / 20 at random (seeded).
    """
    if (folder / "train" / "A").is_dir() or (folder / "test" / "A").is_dir():
        return folder
    if all((folder / "list" / f"{s}.txt").is_file() for s in ("train", "test")):
        return folder
    names = pair_names(folder)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in names:
        prefix = name.split("_", 1)[0]
        splits[prefix if prefix in splits else "test"].append(name)
    if training and not splits["train"]:
        # No name prefixes: a seeded 60 / 20 / 20 split of the pairs.
        import random

        shuffled = sorted(names)
        random.Random(0).shuffle(shuffled)
        n_train, n_val = round(0.6 * len(names)), round(0.2 * len(names))
        splits = {
            "train": sorted(shuffled[:n_train]),
            "val": sorted(shuffled[n_train : n_train + n_val]),
            "test": sorted(shuffled[n_train + n_val :]),
        }
    view.mkdir(parents=True, exist_ok=True)
    for sub in ("A", "B", "label"):
        link = view / sub
        if not link.exists():
            link.symlink_to((folder / sub).resolve(), target_is_directory=True)
    (view / "list").mkdir(exist_ok=True)
    for split, members in splits.items():
        (view / "list" / f"{split}.txt").write_text("".join(f"{n}.png\n" for n in members))
    return view


def read_mask(path: Path) -> Any:
    """A 0/255 (or 0/1) label or prediction PNG as a 0/1 long tensor ``[H, W]``."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img)
    if array.ndim == 3:  # some predictions are saved as RGB
        array = array.max(axis=2)
    return torch.from_numpy((array > 0).astype(np.int64))


def score_folder(pred_dir: Path, label_dir: Path, names: list[str]) -> dict[str, float]:
    """Binary change scores of the PNG maps in ``pred_dir`` against ``label_dir``."""
    from geochange.metrics import BinaryChangeMetrics

    metric = BinaryChangeMetrics(ignore_index=255)
    for name in names:
        metric.update(
            read_mask(pred_dir / f"{name}.png")[None], read_mask(label_dir / f"{name}.png")[None]
        )
    return {k: round(float(v), 4) for k, v in metric.compute().items()}


def write_predictions(
    module: Any, dataset: Any, normalization: dict[str, list[float]], dst: Path
) -> None:
    """Save the model's 0/255 change maps of ``dataset``'s pairs as ``dst/NAME.png``."""
    import numpy as np
    import torch
    from PIL import Image

    mean = torch.tensor(normalization["mean"]).view(1, 1, -1, 1, 1)
    std = torch.tensor(normalization["std"]).view(1, 1, -1, 1, 1)
    dst.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.inference_mode():
        for index, name in enumerate(dataset.names):
            image = dataset[index]["image"][None]
            logits = module.model((image - mean) / std)["change"]
            change = (torch.sigmoid(logits)[0, 0] >= 0.5).numpy().astype(np.uint8) * 255
            Image.fromarray(change).save(dst / f"{name}.png")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; return (and write to OUT/summary.json) every score table."""
    args = build_parser().parse_args(argv)

    import lightning.pytorch as pl

    from geochange import ChangeDataModule, ChangeTrainer
    from geochange.datasets import ChangeFolderDataset

    quiet_lightning()
    pl.seed_everything(args.seed, verbose=False)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    test_names = [n.strip() for n in args.test.split(",") if n.strip()]

    # 1. The training benchmark, in its folder layout.
    train_folder = find_dataset(args.root, args.train)
    train_root = split_view(train_folder, out / "datasets" / args.train, training=True)
    datamodule = ChangeDataModule.from_folder(
        train_root, patch_size=args.patch_size, batch_size=args.batch_size, seed=args.seed
    )
    for split in SPLITS:
        ds = datamodule.folder_datasets.get(split)
        print(f"{args.train} {split}: {len(ds) if ds is not None else 0} patches")

    # 2. Brief training, then the test split of every test dataset.
    module = ChangeTrainer(
        model="fusion_unet",
        backbone="resnet18",
        in_channels=datamodule.in_channels,
        task="binary",
        lr=args.lr,
        warmup_steps=5,
        plot_every_n_epochs=0,
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        accelerator="cpu",
        precision="32-true",
        default_root_dir=out / "runs",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(out / f"{args.train}.ckpt", weights_only=True)
    normalization = datamodule.normalization

    summary: dict[str, Any] = {"train": args.train, "steps": trainer.global_step, "datasets": {}}
    for name in test_names:
        folder = find_dataset(args.root, name)
        root = split_view(folder, out / "datasets" / name, training=name == args.train)
        test_module = ChangeDataModule.from_folder(
            root,
            train_split=None,
            val_split=None,
            test_split="test",
            patch_size=args.patch_size,
            batch_size=args.batch_size,
            normalization=normalization,  # the training data's statistics
        )
        tested = trainer.test(module, datamodule=test_module, verbose=False)[0]
        ours = {k.removeprefix("test/"): round(float(v), 4) for k, v in tested.items()}
        ours.pop("loss", None)

        # 3. The same pairs scored from PNG maps: ours and the published models'.
        dataset = ChangeFolderDataset(root, "test")
        ours_dir = out / "predictions" / name / "predict_geochange"
        write_predictions(module, dataset, normalization, ours_dir)
        names = list(dataset.names)
        table = {"geochange (this run)": score_folder(ours_dir, folder / "label", names)}
        for pred_dir in sorted(folder.glob("predict_*")):
            covered = [n for n in names if (pred_dir / f"{n}.png").is_file()]
            if covered:
                model = pred_dir.name.removeprefix("predict_").removeprefix("CD_")
                table[model] = score_folder(pred_dir, folder / "label", covered)
        summary["datasets"][name] = {"pairs": len(names), "trainer_test": ours, "models": table}

        print(f"\n{name}: {len(names)} test pairs ({dataset.root})")
        header = ("IoU^c", "F1", "prec", "recall", "OA", "kappa")
        print(f"  {'model':24s} " + " ".join(f"{h:>6s}" for h in header))
        for model, s in table.items():
            print(
                f"  {model:24s} {s['iou_change']:6.3f} {s['f1']:6.3f} {s['precision']:6.3f} "
                f"{s['recall']:6.3f} {s['oa']:6.3f} {s['kappa']:6.3f}"
            )
        if args.figure_pairs > 0:
            figure = out / f"{name}_predictions.png"
            draw_pairs(folder, ours_dir, names[: args.figure_pairs], figure)
            print(f"  figure: {figure}")

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def draw_pairs(folder: Path, ours_dir: Path, names: list[str], path: Path) -> None:
    """One row per pair: pre | post | reference | this run | each published model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    published = sorted(folder.glob("predict_*"))
    columns = [("pre", folder / "A"), ("post", folder / "B"), ("reference", folder / "label")]
    columns += [("geochange", ours_dir)]
    columns += [(p.name.removeprefix("predict_").removeprefix("CD_"), p) for p in published]
    fig, axes = plt.subplots(
        len(names), len(columns), figsize=(1.6 * len(columns), 1.7 * len(names)), squeeze=False
    )
    for row, name in enumerate(names):
        for col, (title, directory) in enumerate(columns):
            ax = axes[row][col]
            file = directory / f"{name}.png"
            if file.is_file():
                with Image.open(file) as img:
                    ax.imshow(np.asarray(img), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


if __name__ == "__main__":
    main()
