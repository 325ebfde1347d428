"""Training and evaluation loops, metrics and the distributed (torchrun) plumbing.

The loss is CrossEntropyLoss on the network's logits and class indices: the network has no
softmax layer, so there is exactly one softmax (inside the loss)."""
import datetime
import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from model.errors import UserError
from train_domain_classifier.data import NUM_CLASSES, worker_init_fn
from train_domain_classifier.network import probabilities

log = logging.getLogger("domain_classifier")


# ----------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self):
        return self.rank == 0

    @property
    def local_main(self):
        """The first process of its node (LOCAL_RANK 0): it builds the node's image cache."""
        return self.local_rank == 0

    @property
    def active(self):
        return self.world > 1


def check_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    return device


def setup_distributed(device="auto"):
    """Join the torchrun process group if WORLD_SIZE > 1: NCCL on GPUs, gloo on CPU."""
    use_cuda = torch.cuda.is_available() if device == "auto" else check_device(device) == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1:
        # Long timeout: rank 0 prepares the image cache while the others wait at a barrier.
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(hours=3))
    return Dist(rank, world, local_rank, dev)


def cleanup_distributed(d):
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d):
    if d.active:
        dist.barrier()


def weights_fingerprint(model):
    """sha256 of every parameter and buffer of `model` (state_dict order, CPU bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_same_weights(d, model):
    """Log this process's weights fingerprint; in a DDP run, UserError unless every process
    (every node) holds the same weights. Returns the fingerprint."""
    mine = weights_fingerprint(model)
    if not d.active:
        return mine
    log.info("rank %d (local rank %d): final weights sha256 %s", d.rank, d.local_rank, mine)
    every = [None] * d.world
    dist.all_gather_object(every, mine)
    differing = [r for r, f in enumerate(every) if f != every[0]]
    if differing:
        raise UserError(f"the processes ended with different weights: rank(s) "
                        f"{', '.join(map(str, differing))} differ from rank 0")
    if d.main:
        log.info("weights identical on all %d processes", d.world)
    return mine


def broadcast_object(d, obj):
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model, d):
    """Give every rank rank 0's BatchNorm statistics before evaluating: DDP broadcasts them
    at the start of each forward, so after the last step the ranks differ by one update."""
    if d.active:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sum(d, tensor):
    if d.active:
        # gloo and NCCL both reduce on the process's device
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def epoch_seed(seed, epoch, rank):
    """One seed per (run seed, epoch, rank): a resumed epoch draws what it would have drawn."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63


# ----------------------------------------------------------------------------- loaders
def make_loader(dataset, batch_size, workers, sampler=None, generator=None, drop_last=False):
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      worker_init_fn=worker_init_fn, generator=generator, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)


def shard(dataset, d):
    """Every rank's share of an evaluation set, without the padding DistributedSampler adds
    (padding would count some images twice in the metrics)."""
    return Subset(dataset, list(range(d.rank, len(dataset), d.world))) if d.active else dataset


# ----------------------------------------------------------------------------- loops
def make_criterion():
    return nn.CrossEntropyLoss()


def training_step(model, images, labels, criterion, optimizer):
    """One optimisation step; returns (loss value, logits detached)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(images)
    loss = criterion(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.item(), logits.detach()


def train_one_epoch(model, loader, criterion, optimizer, d, desc="train"):
    """Mean loss and accuracy over the samples of every rank."""
    model.train()
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not d.main)
    for images, labels in bar:
        images = images.to(d.device, non_blocking=True)
        labels = labels.to(d.device, non_blocking=True)
        loss, logits = training_step(model, images, labels, criterion, optimizer)
        n = labels.numel()
        sums += torch.tensor([loss * n, (logits.argmax(1) == labels).sum().item(), n],
                             dtype=torch.float64)
        bar.set_postfix(loss=f"{loss:.4f}")
    sums = all_reduce_sum(d, sums.to(d.device)).cpu()
    count = max(sums[2].item(), 1.0)
    return {"loss": sums[0].item() / count, "accuracy": sums[1].item() / count,
            "samples": int(sums[2].item())}


@torch.no_grad()
def evaluate(model, loader, d, desc="validate"):
    """Loss, accuracy, per-class precision/recall and the confusion matrix (rows: truth)."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.float64)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not d.main):
        images, labels = images.to(d.device), labels.to(d.device)
        logits = model(images)
        loss_sum += criterion(logits, labels).item()
        index = labels.cpu() * NUM_CLASSES + logits.argmax(1).cpu()
        confusion += torch.bincount(index, minlength=NUM_CLASSES**2).view(
            NUM_CLASSES, NUM_CLASSES).double()
    packed = all_reduce_sum(d, torch.cat([loss_sum, confusion.flatten()]).to(d.device)).cpu()
    return metrics_from_confusion(packed[1:].view(NUM_CLASSES, NUM_CLASSES).numpy(),
                                  packed[0].item())


def metrics_from_confusion(confusion, loss_sum):
    confusion = np.asarray(confusion, np.int64)
    n = int(confusion.sum())
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(0)
    actual = confusion.sum(1)
    # A class never predicted has undefined precision: reported as 0, not NaN, with its count.
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    return {"loss": loss_sum / max(n, 1), "accuracy": float(tp.sum() / max(n, 1)),
            "samples": n, "precision": precision.tolist(), "recall": recall.tolist(),
            "confusion": confusion.tolist()}


@torch.no_grad()
def predict(model, loader, device, desc="predict"):
    """Softmax probabilities for an ImageFileDataset loader: (indices, probs, skipped indices)."""
    model.eval()
    indices, probs, skipped = [], [], []
    for images, index, ok in tqdm(loader, desc=desc, unit="batch", leave=False):
        ok = ok.bool()
        skipped += index[~ok].tolist()
        if ok.any():
            p = probabilities(model(images[ok].to(device))).cpu().double()
            indices += index[ok].tolist()
            probs.append(p)
    probs = torch.cat(probs).numpy() if probs else np.zeros((0, NUM_CLASSES))
    return indices, probs, skipped
