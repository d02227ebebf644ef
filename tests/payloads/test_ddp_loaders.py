"""The Fashion-MNIST loaders of payloads/ddp/train.py on tiny generated data: IDX (gzipped or not,
flat or torchvision's FashionMNIST/raw layout), Hugging Face save_to_disk arrow, and missing data.

The fake images are learnable (each class lights its own band of rows), so a loader that mixes up
images and labels shows up as chance-level accuracy, not only as a crash.
"""

from __future__ import annotations

import gzip
import random
import struct
import subprocess
from pathlib import Path

import pytest

SIDE = 28
N_TRAIN, N_TEST = 320, 160
TRAIN_FLAGS = ("--dataset", "fashion-mnist", "--epochs", "2", "--batch-size", "16", "--lr", "0.05")
TRAIN_FLAGS += ("--num-threads", "1")
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def fake_split(count: int, seed: int) -> tuple[bytes, bytes]:
    """count 28x28 uint8 images (row-major, concatenated) and their labels 0..9."""
    rng = random.Random(seed)
    labels = bytes(i % 10 for i in range(count))
    pixels = bytearray()
    for label in labels:
        band = range(2 + 2 * label, 5 + 2 * label)
        for row in range(SIDE):
            for _ in range(SIDE):
                pixels.append(rng.randint(160, 255) if row in band else rng.randint(0, 70))
    return bytes(pixels), labels


@pytest.fixture(scope="module")
def fake_fmnist() -> dict[str, tuple[bytes, bytes]]:
    return {"train": fake_split(N_TRAIN, seed=1), "test": fake_split(N_TEST, seed=2)}


def write_idx(folder: Path, data: dict[str, tuple[bytes, bytes]], gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "test")):
        pixels, labels = data[split]
        files = {
            STEMS[f"{prefix}_images"]: struct.pack(">IIII", 0x0803, len(labels), SIDE, SIDE) + pixels,
            STEMS[f"{prefix}_labels"]: struct.pack(">II", 0x0801, len(labels)) + labels,
        }
        for name, content in files.items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)


def assert_trained(result, source: str) -> None:
    assert result.returncode == 0, result
    assert source in result.stderr, result.stderr
    assert f"train={N_TRAIN} test={N_TEST} shape=1x{SIDE}x{SIDE}" in result.stderr
    summary = result.summary
    assert (summary["train_samples"], summary["test_samples"]) == (N_TRAIN, N_TEST)
    assert summary["epochs"] == 2
    assert 0 <= summary["loss"] < 2.0
    assert summary["samples_per_s"] > 0
    # Chance is 0.1: anything far above means images and labels line up.
    assert summary["test_accuracy"] >= 0.6, summary


@pytest.mark.parametrize(
    ("gz", "layout"),
    [
        pytest.param(True, ".", id="gzipped"),
        pytest.param(False, "FashionMNIST/raw", id="raw-torchvision-layout"),
    ],
)
def test_idx_loader(ddp_run, fake_fmnist, tmp_path: Path, gz: bool, layout: str):
    write_idx(tmp_path / layout, fake_fmnist, gz=gz)
    result = ddp_run(*TRAIN_FLAGS, "--data-path", str(tmp_path))
    assert_trained(result, "IDX (gz)" if gz else "IDX (raw)")


WRITE_HF = """
import sys
from pathlib import Path
import datasets
from PIL import Image

out, side = Path(sys.argv[1]), int(sys.argv[2])
features = datasets.Features(
    {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
)
splits = {}
for split in ("train", "test"):
    pixels = (out.parent / f"{split}-pixels.bin").read_bytes()
    labels = list((out.parent / f"{split}-labels.bin").read_bytes())
    size = side * side
    images = [Image.frombytes("L", (side, side), pixels[i * size:(i + 1) * size]) for i in range(len(labels))]
    splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
datasets.DatasetDict(splits).save_to_disk(str(out))
"""


def test_hf_arrow_loader(ddp_python, ddp_run, fake_fmnist, tmp_path: Path):
    for split, (pixels, labels) in fake_fmnist.items():
        (tmp_path / f"{split}-pixels.bin").write_bytes(pixels)
        (tmp_path / f"{split}-labels.bin").write_bytes(labels)
    out = tmp_path / "fashion_mnist"
    made = subprocess.run(
        [str(ddp_python), "-c", WRITE_HF, str(out), str(SIDE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert (out / "dataset_dict.json").is_file()
    assert (out / "train" / "state.json").is_file()
    result = ddp_run(*TRAIN_FLAGS, "--data-path", str(out))
    assert_trained(result, "Hugging Face arrow")


@pytest.mark.parametrize("kind", ["missing", "empty", "partial"])
def test_missing_data_is_one_clear_line(ddp_run, fake_fmnist, tmp_path: Path, kind: str):
    data_path = tmp_path / "fmnist"
    if kind == "empty":
        data_path.mkdir()
    elif kind == "partial":
        write_idx(data_path, fake_fmnist, gz=True)
        (data_path / "t10k-labels-idx1-ubyte.gz").unlink()
    result = ddp_run(*TRAIN_FLAGS, "--data-path", str(data_path))
    assert result.returncode == 2, result
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert str(data_path) in errors[0]
    for stem in STEMS.values():
        assert stem in errors[0]
    assert "Traceback" not in result.stderr
    assert result.summaries == []
