#!/usr/bin/env python3
"""pyctl DDP training payload: a small 2-conv CNN on Fashion-MNIST or scikit-learn's 8x8 digits.

Launch it with torchrun (one worker per GPU, or per CPU slot), or run it as a plain single process:

    torchrun --standalone --nproc-per-node 2 train.py --dataset digits --epochs 10
    python train.py --dataset digits --epochs 3

README.md beside this file documents the flags, the environment contract, the output contract
(JSON log lines and the PYCTL_SUMMARY line) and the fault-injection test hook.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import json
import math
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.constants import default_pg_timeout
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

SUMMARY_PREFIX = "PYCTL_SUMMARY"
METRICS_PREFIX = "PYCTL_METRICS"  # one line per epoch and rank on stdout, read by pyctl's progress and report
FAIL_AT_ENV = "PYCTL_DDP_FAIL_AT"
DATASETS = ("fashion-mnist", "digits")
NUM_CLASSES = 10
# The digits train/test split is fixed, independent of --seed: results stay comparable across runs.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
SGD_MOMENTUM = 0.9
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


# --- Process identity and logging ---------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Who this process is, from the environment torchrun sets (single process when it is absent)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    restart_count: int
    launched: bool
    host: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistInfo:
        launched = "RANK" in env and "WORLD_SIZE" in env
        world_size = int(env["WORLD_SIZE"]) if launched else 1
        return cls(
            rank=int(env["RANK"]) if launched else 0,
            local_rank=int(env.get("LOCAL_RANK", "0")) if launched else 0,
            world_size=world_size,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world_size))) if launched else 1,
            restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
            launched=launched,
            host=socket.gethostname(),
        )


def log(info: DistInfo, message: str) -> None:
    """One start-up or progress line on stderr, tagged with the host and ranks, flushed at once."""
    tag = f"[host={info.host} rank={info.rank}/{info.world_size} local_rank={info.local_rank}]"
    print(f"{tag} {message}", file=sys.stderr, flush=True)


# --- Command line ----------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Small-CNN image classifier trained with PyTorch DDP (torchrun) or as a single process.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="digits", help="data set (default: digits)")
    parser.add_argument(
        "--data-path",
        type=Path,
        help="folder with Fashion-MNIST (IDX files or a Hugging Face save_to_disk folder); "
        "required for fashion-mnist, rejected for digits (scikit-learn ships it)",
    )
    parser.add_argument("--epochs", type=positive_int, default=10, help="total epochs of the job (default: 10)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch size per rank (default: 64)")
    parser.add_argument(
        "--lr", type=positive_float, default=0.01, help="SGD learning rate, momentum 0.9 (default: 0.01)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for model init and shuffling (default: 0)")
    parser.add_argument(
        "--num-threads",
        type=positive_int,
        help="torch.set_num_threads per process (default: torch's choice; torchrun sets OMP_NUM_THREADS=1)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "nccl", "gloo"),
        default="auto",
        help="process-group backend (default: auto = nccl when CUDA is available, else gloo)",
    )
    parser.add_argument(
        "--checkpoint-path",
        type=Path,
        help="rank 0 writes this file atomically after each epoch; if it exists at start, the job resumes",
    )
    parser.add_argument("--log-path", type=Path, help="rank 0 appends one JSON line per epoch and a summary")
    parser.add_argument(
        "--max-steps-per-epoch",
        type=positive_int,
        help="stop each epoch after this many steps per rank (for benchmarks; default: the whole epoch)",
    )
    args = parser.parse_args(argv)
    if args.dataset == "fashion-mnist" and args.data_path is None:
        parser.error("--data-path is required for --dataset fashion-mnist (nothing is downloaded)")
    if args.dataset == "digits" and args.data_path is not None:
        parser.error("--data-path is not used with --dataset digits (scikit-learn ships that data set)")
    return args


@dataclass(frozen=True)
class FailAt:
    """The fault-injection hook: PYCTL_DDP_FAIL_AT="epoch:step:rank" (epoch from 1, step from 0)."""

    epoch: int
    step: int
    rank: int

    @classmethod
    def from_env(cls, value: str | None) -> FailAt | None:
        if not value:
            return None
        parts = value.split(":")
        try:
            epoch, step, rank = (int(part) for part in parts)
        except ValueError:
            raise PayloadError(
                f'{FAIL_AT_ENV}="{value}" is not "epoch:step:rank" (three integers, e.g. 2:3:1)'
            ) from None
        return cls(epoch, step, rank)


# --- Data ---------------------------------------------------------------------------------------------------


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


# --- Model ------------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Two 3x3 conv + ReLU + 2x2 max-pool blocks, then two linear layers (the Fashion-MNIST tutorial CNN).

    The flattened size is computed from the input shape, so 8x8 digits and 28x28 images both fit.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, channels, height, width)).shape[1]
        self.classifier = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --- Checkpoints ------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so torch.load(weights_only=True) can read them back."""
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss_next"]))


def temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync it, os.replace it over path, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Temp files a killed rank 0 left mid-write (a SIGKILL skips every cleanup)."""
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{temp_prefix(path)}*"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


# --- Training ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    seed: int
    checkpoint_path: Path | None
    log_path: Path | None
    max_steps_per_epoch: int | None
    fail_at: FailAt | None


class Trainer:
    """Trains SmallCNN with DDP. Every rank runs train(); only global rank 0 writes files."""

    def __init__(self, config: Config, info: DistInfo, device: torch.device, data: Splits) -> None:
        self.config = config
        self.info = info
        self.device = device
        self.data = data
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.model = SmallCNN(data.image_shape).to(device)
        device_ids = [device.index] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=SGD_MOMENTUM)
        pin = device.type == "cuda"
        self.sampler = DistributedSampler(
            data.train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed
        )
        self.train_loader = DataLoader(data.train, batch_size=config.batch_size, sampler=self.sampler, pin_memory=pin)
        # Each rank scores a disjoint stride of the test set (no padding), and the counts are summed.
        shard = Subset(data.test, range(info.rank, len(data.test), info.world_size))
        self.test_loader = DataLoader(shard, batch_size=max(256, config.batch_size), pin_memory=pin)
        self.epochs_done = 0
        self.test_accuracy: float | None = None
        self.rank_samples_per_s: float | None = None

    def train(self) -> dict[str, Any]:
        """Run the remaining epochs (resuming from the checkpoint if there is one); return the summary."""
        started = time.perf_counter()
        resumed_from = self._restore()
        total_samples, total_seconds, loss = 0, 0.0, None
        for epoch in range(resumed_from + 1, self.config.epochs + 1):
            self.sampler.set_epoch(epoch)
            loss, samples, seconds = self._train_epoch(epoch)
            self.test_accuracy = self._evaluate()
            self.epochs_done = epoch
            total_samples += samples
            total_seconds += seconds
            self._save_checkpoint()
            record_ = {
                "event": "epoch",
                "epoch": epoch,
                "loss": round(loss, 6),
                "test_accuracy": round(self.test_accuracy, 6),
                "samples_per_s": round(samples / seconds, 2) if seconds > 0 else None,
                "samples": samples,
                "train_seconds": round(seconds, 4),
                "elapsed_s": round(time.perf_counter() - started, 4),
                "world_size": self.info.world_size,
                "restart_count": self.info.restart_count,
            }
            self._log_json(record_)
            mine = {"epochs": self.config.epochs, "rank": self.info.rank, "rank_samples_per_s": self.rank_samples_per_s}
            print(f"{METRICS_PREFIX} {json.dumps({**record_, **mine})}", flush=True)
            if self.info.is_main:
                log(
                    self.info,
                    f"epoch {epoch}/{self.config.epochs} loss={loss:.4f} "
                    f"test_accuracy={self.test_accuracy:.4f} samples_per_s={record_['samples_per_s']}",
                )
        if self.test_accuracy is None:  # nothing left to train: the checkpoint already holds every epoch
            self.test_accuracy = self._evaluate()
        summary = {
            "event": "summary",
            "dataset": self.config.dataset,
            "test_accuracy": round(self.test_accuracy, 6),
            "loss": None if loss is None else round(loss, 6),
            "epochs": self.epochs_done,
            "world_size": self.info.world_size,
            "samples_per_s": round(total_samples / total_seconds, 2) if total_seconds > 0 else None,
            "resumed_from_epoch": resumed_from,
            "restart_count": self.info.restart_count,
            "train_samples": len(self.data.train),
            "test_samples": len(self.data.test),
            "seconds": round(time.perf_counter() - started, 4),
        }
        self._log_json(summary)
        if self.info.is_main:
            print(f"{SUMMARY_PREFIX} {json.dumps(summary)}", flush=True)
        return summary

    def _train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """One pass over this rank's shard; returns the global mean loss, global samples and seconds."""
        self.ddp.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        samples = 0
        start = time.perf_counter()
        batches = itertools.islice(self.train_loader, self.config.max_steps_per_epoch)
        for step, (cpu_images, cpu_labels) in enumerate(batches):
            self._maybe_fail(epoch, step)
            images = cpu_images.to(self.device, non_blocking=True)
            labels = cpu_labels.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.ddp(images), labels)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * labels.size(0)
            samples += labels.size(0)
        own = time.perf_counter() - start  # this rank's own pace, before it waits for the slowest
        self.rank_samples_per_s = round(samples / own, 2) if own > 0 else None
        totals = torch.stack([loss_sum, torch.tensor(float(samples), dtype=torch.float64, device=self.device)])
        dist.all_reduce(totals)  # also waits for the slowest rank, so the time covers the whole step set
        seconds = time.perf_counter() - start
        loss_total, samples_total = totals.tolist()
        return loss_total / max(samples_total, 1.0), int(samples_total), seconds

    @torch.no_grad()
    def _evaluate(self) -> float:
        self.model.eval()
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        for cpu_images, cpu_labels in self.test_loader:
            images = cpu_images.to(self.device, non_blocking=True)
            labels = cpu_labels.to(self.device, non_blocking=True)
            counts[0] += (self.model(images).argmax(dim=1) == labels).sum()
            counts[1] += labels.size(0)
        dist.all_reduce(counts)
        correct, total = counts.tolist()
        return correct / total

    def _maybe_fail(self, epoch: int, step: int) -> None:
        fail = self.config.fail_at
        if fail is None or self.info.restart_count != 0:
            return
        if (fail.epoch, fail.step, fail.rank) == (epoch, step, self.info.rank):
            log(self.info, f"{FAIL_AT_ENV}: failing on purpose at epoch {epoch} step {step} (os._exit(1))")
            sys.stdout.flush()
            os._exit(1)

    def _restore(self) -> int:
        """Load the checkpoint on rank 0 and broadcast it, so every rank resumes from the same epoch."""
        path = self.config.checkpoint_path
        if path is None:
            return 0
        state: dict[str, Any] | None = None
        if self.info.is_main:
            for leftover in remove_stale_temp_files(path):
                log(self.info, f"checkpoint: removed a temp file left by a killed writer: {leftover}")
            if path.is_file():
                state = torch.load(path, map_location="cpu", weights_only=True)
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
        if state is None:
            log(self.info, f"checkpoint: none at {path}, starting at epoch 1")
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.epochs_done = int(state["epoch"])
        log(self.info, f"checkpoint: resumed from {path} after epoch {self.epochs_done}")
        return self.epochs_done

    def _save_checkpoint(self) -> None:
        if not self.info.is_main or self.config.checkpoint_path is None:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epochs_done,
            "rng": rng_state(),
            "dataset": self.config.dataset,
            "world_size": self.info.world_size,
            "test_accuracy": self.test_accuracy,
        }
        atomic_save(state, self.config.checkpoint_path)

    def _log_json(self, record_: dict[str, Any]) -> None:
        if not self.info.is_main or self.config.log_path is None:
            return
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.config.log_path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record_) + "\n")
            stream.flush()


# --- Set-up -----------------------------------------------------------------------------------------------


def pick_backend(requested: str) -> str:
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise PayloadError("--backend nccl needs CUDA, and torch sees no GPU here: use --backend gloo or auto")
    return requested


def pick_device(info: DistInfo) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if info.local_rank >= count:
        raise PayloadError(
            f"LOCAL_RANK={info.local_rank} but only {count} GPU(s) are visible: "
            f"run at most {count} workers per node (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", info.local_rank)


def warn_about_loopback(info: DistInfo) -> None:
    """Multi-node jobs break when the host name resolves to loopback and no interface is named."""
    if info.world_size <= info.local_world_size:
        return
    if os.environ.get("GLOO_SOCKET_IFNAME") or os.environ.get("NCCL_SOCKET_IFNAME"):
        return
    try:
        address = socket.gethostbyname(info.host)
    except OSError:
        return
    if address.startswith("127."):
        log(
            info,
            f"warning: {info.host} resolves to {address}; peers on other nodes cannot reach that. "
            "Set GLOO_SOCKET_IFNAME (gloo) or NCCL_SOCKET_IFNAME (nccl) to the cluster interface",
        )


def init_process_group(backend: str, info: DistInfo) -> None:
    """init_process_group from torchrun's environment (env://), or a one-rank group without torchrun.

    One exception: torchrun shares its TCPStore with the workers and keeps it across restarts, so a
    restarted worker can read a peer's address from the failed attempt and die with "Connection
    refused" (pytorch/pytorch#135712). On a single node every worker sees the same restart count, so
    the store is scoped per attempt here. Across nodes the counts differ; there torchrun must run with
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which gives each attempt a fresh store.
    """
    if not info.launched:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        return
    shared_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    single_node = info.world_size == info.local_world_size
    if shared_store and not single_node and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        log(
            info,
            "warning: torchrun keeps one TCPStore across restarts, so a multi-node restart may fail to "
            "reconnect (pytorch/pytorch#135712): run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
        )
    if shared_store and single_node and info.restart_count > 0:
        store = dist.TCPStore(
            host_name=os.environ["MASTER_ADDR"],
            port=int(os.environ["MASTER_PORT"]),
            world_size=info.world_size,
            is_master=False,
            timeout=default_pg_timeout,
        )
        scoped = dist.PrefixStore(f"pyctl-restart-{info.restart_count}/", store)
        log(info, f"init_process_group: store scoped to restart {info.restart_count} (pytorch/pytorch#135712)")
        dist.init_process_group(backend=backend, store=scoped, rank=info.rank, world_size=info.world_size)
        return
    dist.init_process_group(backend=backend)


def shutdown() -> None:
    """Leave together, then tear down: no rank closes its connections while a peer still needs them."""
    dist.barrier()
    dist.destroy_process_group()


def run(args: argparse.Namespace, info: DistInfo) -> dict[str, Any]:
    fail_at = FailAt.from_env(os.environ.get(FAIL_AT_ENV))
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    log(
        info,
        f"start pid={os.getpid()} torch={torch.__version__} launched_by_torchrun={info.launched} "
        f"restart_count={info.restart_count} threads={torch.get_num_threads()} dataset={args.dataset}",
    )
    if fail_at is not None:
        log(info, f"{FAIL_AT_ENV}={fail_at.epoch}:{fail_at.step}:{fail_at.rank} (first attempt only)")
    backend = pick_backend(args.backend)  # checked before the data loads, so a wrong flag fails fast
    data = load_data(args.dataset, args.data_path)
    shape = "x".join(str(n) for n in data.image_shape)
    log(info, f"data {data.source}: train={len(data.train)} test={len(data.test)} shape={shape}")

    # Set-up proper: the device from LOCAL_RANK (never the global rank), then the process group.
    device = pick_device(info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    warn_about_loopback(info)
    rendezvous = (
        f"MASTER_ADDR={os.environ.get('MASTER_ADDR')} MASTER_PORT={os.environ.get('MASTER_PORT')}"
        if info.launched
        else "single process (no torchrun environment)"
    )
    log(info, f"init_process_group backend={backend} device={device} {rendezvous}")
    init_process_group(backend, info)
    log(info, f"init_process_group done world_size={dist.get_world_size()}")

    config = Config(
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_path=args.checkpoint_path,
        log_path=args.log_path,
        max_steps_per_epoch=args.max_steps_per_epoch,
        fail_at=fail_at,
    )
    summary = Trainer(config, info, device, data).train()
    shutdown()
    log(info, "done: process group destroyed")
    return summary


@record
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = DistInfo.from_env(os.environ)
    try:
        run(args, info)
    except PayloadError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    status = main()
    # Leave without the interpreter's and C++ runtime's teardown. Once DDP has been built, torch 2.13
    # keeps the gloo process group's threads (pt_gloo_runloop, gloo_tcp_loop) alive past
    # destroy_process_group, and tearing them down at exit sometimes aborts a worker that has already
    # finished ("terminate called without an active exception", SIGABRT), which torchrun counts as a
    # failure. Every file is closed by now (the checkpoint fsynced); only the standard streams need
    # flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
