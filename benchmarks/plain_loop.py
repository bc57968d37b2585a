"""The fine-tuning loop most people start from, as tutorials write it: the baseline autotl is measured against.

An ImageFolder of files, torchvision transforms on PIL images per sample, a DataLoader,
fp32, and freezing by ``requires_grad=False`` alone (frozen BatchNorm still in train
mode, the whole network run every step, nothing cached).
"""

from __future__ import annotations

import time

import timm
import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from autotl import backbones


def loaders(train_dir, val_dir, size: int, batch_size: int, augment: bool, mean, std, workers: int = 0):
    normalize = transforms.Normalize(mean, std)
    train_tf = transforms.Compose(
        (
            [transforms.RandomResizedCrop(size, scale=(0.6, 1.0)), transforms.RandomHorizontalFlip()]
            if augment
            else [transforms.Resize(size), transforms.CenterCrop(size)]
        )
        + [transforms.ToTensor(), normalize]
    )
    val_tf = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(), normalize]
    )
    train = datasets.ImageFolder(str(train_dir), transform=train_tf)
    val = datasets.ImageFolder(str(val_dir), transform=val_tf)
    return (
        torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True),
        torch.utils.data.DataLoader(val, batch_size=256, num_workers=workers),
        len(train.classes),
    )


def make_model(name: str, num_classes: int, frozen_depth: float):
    """timm model with pretrained weights (timm's own layers); the first blocks frozen by requires_grad only."""
    model = timm.create_model(name, num_classes=num_classes, **backbones.pretrained_kwargs(name))
    groups = backbones.body_groups(model)
    frozen = {n for names in groups[: round(frozen_depth * len(groups))] for n in names}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    return model


def train_epoch(model, loader, optimizer, scheduler=None, label_smoothing: float = 0.0) -> tuple[float, int]:
    """One epoch; returns (seconds, images)."""
    model.train()
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        seen += len(labels)
    return time.perf_counter() - start, seen


def accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += len(labels)
    return correct / total


def plain_objective(space, train_dir, val_dir, deadline, log):
    """A plain Optuna objective over the same space: sample, build, train with the plain loop, score."""

    def objective(trial):
        config = space.sample(trial)
        pre = backbones.preprocessing(config.backbone, config.resolution_scale)
        train, val, n_classes = loaders(
            train_dir, val_dir, pre.size, config.batch_size, config.augment_strength > 0, pre.mean, pre.std
        )
        model = make_model(config.backbone, n_classes, config.frozen_depth)
        params = [p for p in model.parameters() if p.requires_grad]
        wd = config.regularizer_strength if config.regularizer == "weight_decay" else 0.0
        optimizer = (
            torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=wd)
            if config.optimizer == "sgd"
            else torch.optim.AdamW(params, lr=config.lr, weight_decay=wd)
        )
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.max_epochs * len(train))
            if config.lr_schedule == "cosine"
            else None
        )
        smoothing = config.regularizer_strength if config.regularizer == "label_smoothing" else 0.0
        best = 0.0
        for _ in range(config.max_epochs):
            train_epoch(model, train, optimizer, scheduler, smoothing)
            best = max(best, accuracy(model, val))
            log(best)
            if time.time() > deadline:
                break
        return best

    return objective
