#!/usr/bin/env python3
"""pyctl DDP training payload: a small 2-conv CNN on Fashion-MNIST or scikit-learn's 8x8 digits.

Launch it with torchrun (one worker per GPU, or per CPU slot), or run it as a plain single process:

    torchrun --standalone --nproc-per-node 2 train.py --dataset digits --epochs 10
    python train.py --dataset digits --epochs 3

The trainer follows the PyTorch DDP tutorial (pytorch/examples, ddp-tutorial-series): set-up from
torchrun's environment, a Trainer with one train(), a snapshot to resume from. Its data and loaders
live in loaders.py, its atomic checkpoints in checkpoint.py, both beside this file.

README.md beside this file documents the flags, the environment contract, the output contract
(JSON log lines and the PYCTL_SUMMARY line) and the fault-injection test hook.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from checkpoint import atomic_save, remove_stale_temp_files, rng_state, set_rng_state
from loaders import DATASETS, NUM_CLASSES, PayloadError, Splits, load_data, make_loaders
from torch import nn
from torch.distributed.constants import default_pg_timeout
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

SUMMARY_PREFIX = "PYCTL_SUMMARY"
METRICS_PREFIX = "PYCTL_METRICS"  # one line per epoch and rank on stdout, read by pyctl's progress and report
FAIL_AT_ENV = "PYCTL_DDP_FAIL_AT"
SGD_MOMENTUM = 0.9


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


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP tuned for a small model on few cores; none of it changes the gradients the optimizer sees.

    - One bucket holding the whole gradient (1.6 MiB for SmallCNN on 28x28): one all-reduce per step.
      DDP's defaults (a 1 MiB first bucket, then 25 MiB) made it two, and on CPUs each costs the gloo
      threads and the reducer their own hand-offs, taken from the cores the other rank computes on.
    - gradient_as_bucket_view: the grads are views into that bucket, not copied in and out of it.
    - static_graph: the same parameters take part in every step (no unused ones to search for).
    benchmarks/ddp_scaling.py prints what each costs; tests/payloads/test_ddp_train.py checks that two
    ranks still learn what one process with the global batch learns.
    """
    gradient_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=max(1, math.ceil(gradient_bytes / 2**20)),
        gradient_as_bucket_view=True,
        static_graph=True,
    )


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
        self.ddp = wrap_ddp(self.model, device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=SGD_MOMENTUM)
        loaders = make_loaders(
            data, config.batch_size, info.rank, info.world_size, config.seed, pin=device.type == "cuda"
        )
        self.sampler, self.train_loader, self.test_loader = loaders.sampler, loaders.train, loaders.test
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
            # One write with its newline: ranks share stdout, and an unbuffered print writes the text and the
            # newline separately, so two ranks' lines could interleave into one.
            sys.stdout.write(f"{METRICS_PREFIX} {json.dumps({**record_, **mine})}\n")
            sys.stdout.flush()
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
