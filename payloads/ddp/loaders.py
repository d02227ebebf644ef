"""The DDP payload's data: scikit-learn's 8x8 digits, or Fashion-MNIST from IDX files or a Hugging Face
save_to_disk folder (nothing is downloaded), and the per-rank loaders that feed the trainer.

train.py imports this module from its own folder; the loaders' flags and layouts are in README.md.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

DATASETS = ("fashion-mnist", "digits")
NUM_CLASSES = 10
# The digits train/test split is fixed, independent of --seed: results stay comparable across runs.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_FILES = (
    "IDX files " + ", ".join(f"{stem}[.gz]" for stem in IDX_STEMS.values()) + " (also looked for in"
    " FashionMNIST/raw/), or a Hugging Face datasets save_to_disk folder (train/ and test/ with state.json)"
)


class PayloadError(Exception):
    """A problem the user can fix (missing data, impossible flag combination): one line, exit code 2."""


# --- Data sets--------------------------------------------------------------------------------------------------


@dataclass
class Splits:
    """Train and test sets as normalised float tensors of shape (N, 1, H, W) and int64 labels."""

    train: TensorDataset
    test: TensorDataset
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.tensors[0].shape[1:])


def make_splits(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    scale: float,
    source: str,
) -> Splits:
    """Scale pixels to [0, 1], normalise with the train set's mean and std, add the channel axis."""
    for name, labels in (("train", train_y), ("test", test_y)):
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise PayloadError(f"{source}: {name} labels must lie in 0..{NUM_CLASSES - 1}")
    if len(train_x) == 0 or len(test_x) == 0:
        raise PayloadError(f"{source}: the train and the test split must both hold images")
    train = train_x.astype(np.float32) / scale
    test = test_x.astype(np.float32) / scale
    mean, std = float(train.mean()), float(train.std()) or 1.0

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        images = torch.from_numpy((x - mean) / std).unsqueeze(1).contiguous()
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)))

    return Splits(tensors(train, train_y), tensors(test, test_y), source)


def load_digits() -> Splits:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        bunch.images,
        bunch.target,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=bunch.target,
    )
    return make_splits(train_x, train_y, test_x, test_y, scale=16.0, source="scikit-learn digits")


def read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as exc:
        raise PayloadError(f"{path}: cannot read it ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise PayloadError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + math.prod(dims):
        raise PayloadError(f"{path}: size does not match its header {dims} (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_files(data_path: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST IDX files under data_path (or its torchvision-style FashionMNIST/raw)."""
    for folder in (data_path, data_path / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in IDX_STEMS.items():
            for name in (stem, f"{stem}.gz"):
                if (folder / name).is_file():
                    found[key] = folder / name
                    break
        if len(found) == len(IDX_STEMS):
            return found
    return None


def load_idx(files: dict[str, Path]) -> Splits:
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            where = files[f"{split}_images"]
            raise PayloadError(f"{where}: {split} images {images.shape} do not match labels {labels.shape}")
    gz = sorted({"gz" if path.name.endswith(".gz") else "raw" for path in files.values()})
    folder = files["train_images"].parent
    return make_splits(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        scale=255.0,
        source=f"IDX ({'+'.join(gz)}) in {folder}",
    )


def is_hf_folder(data_path: Path) -> bool:
    return (data_path / "dataset_dict.json").is_file() or (data_path / "train" / "state.json").is_file()


def hf_images(column: Any, where: str) -> np.ndarray:
    """Images from an Arrow column: HF Image structs (PNG/JPEG bytes) or nested lists of pixel values."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        from PIL import Image

        images = []
        for encoded in column.field("bytes").to_pylist():
            if encoded is None:
                raise PayloadError(f"{where}: an image has no embedded bytes (only a path)")
            with Image.open(io.BytesIO(encoded)) as image:
                images.append(np.asarray(image.convert("L"), dtype=np.uint8))
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise PayloadError(f"{where}: images have different sizes {sorted(shapes)}")
        return np.stack(images)
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        rows = len(column)
        flat = column
        while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
            flat = flat.flatten()
        pixels = flat.to_numpy(zero_copy_only=False).reshape(rows, -1)
        side = math.isqrt(pixels.shape[1])
        if side * side != pixels.shape[1]:
            raise PayloadError(f"{where}: images of {pixels.shape[1]} pixels are not square")
        return pixels.reshape(rows, side, side)
    raise PayloadError(f"{where}: unsupported image column type {column.type}")


def load_hf(data_path: Path) -> Splits:
    """A Hugging Face `datasets` save_to_disk folder with train and test splits (columns image, label)."""
    # Offline by construction: nothing in this payload downloads.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        folder = data_path / split
        if not (folder / "state.json").is_file():
            raise PayloadError(f"{data_path}: Hugging Face folder without a '{split}' split ({folder}/state.json)")
        table = datasets.load_from_disk(str(folder)).with_format("arrow")[:]
        for name in ("image", "label"):
            if name not in table.column_names:
                raise PayloadError(f"{folder}: no '{name}' column (columns: {', '.join(table.column_names)})")
        labels = table.column("label").to_numpy()
        arrays[split] = (hf_images(table.column("image"), str(folder)), labels)
    images_max = max(float(arrays["train"][0].max(initial=0)), 1.0)
    scale = 255.0 if images_max > 1.0 else 1.0
    return make_splits(*arrays["train"], *arrays["test"], scale=scale, source=f"Hugging Face arrow in {data_path}")


def load_data(dataset: str, data_path: Path | None) -> Splits:
    if dataset == "digits":
        return load_digits()
    assert data_path is not None  # parse_args enforces it
    if data_path.is_dir():
        if is_hf_folder(data_path):
            return load_hf(data_path)
        files = find_idx_files(data_path)
        if files is not None:
            return load_idx(files)
    raise PayloadError(f"no Fashion-MNIST data at {data_path}: expected {EXPECTED_FILES}; nothing is downloaded")


# --- Loaders ----------------------------------------------------------------------------------------------


@dataclass
class Loaders:
    """This rank's loaders: a shuffled, disjoint shard of the train set per epoch (call
    sampler.set_epoch), and a disjoint stride of the test set (no padding; the counts are summed)."""

    sampler: DistributedSampler
    train: DataLoader
    test: DataLoader


def make_loaders(data: Splits, batch_size: int, rank: int, world_size: int, seed: int, pin: bool) -> Loaders:
    sampler = DistributedSampler(data.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    train = DataLoader(data.train, batch_size=batch_size, sampler=sampler, pin_memory=pin)
    shard = Subset(data.test, range(rank, len(data.test), world_size))
    test = DataLoader(shard, batch_size=max(256, batch_size), pin_memory=pin)
    return Loaders(sampler, train, test)
