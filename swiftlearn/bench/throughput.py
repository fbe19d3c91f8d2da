"""The ``train`` suite: training images/s of the trainer's own step against a plain loop."""

from __future__ import annotations

import os
import time

import torch

from ..data import CachedImages, load_cached, resize_center
from ..model import build_model
from ..train import TrainConfig, build_trainer
from ..train.step import batch_generator, classification_loss, timed_step
from ..utils import amp_dtype, autocast
from .common import machine_info

__all__ = ["benchmark_throughput", "run_train"]


def _synthetic_images(img_size: int, batch_size: int) -> CachedImages:
    """Random uint8 images (512 or four batches) 16 px larger than ``img_size``, 10 classes."""
    g = torch.Generator().manual_seed(0)
    n = max(512, batch_size * 4)
    return CachedImages(torch.randint(0, 256, (n, 3, img_size + 16, img_size + 16),
                                      dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])


def _plain_steps(net, opt, data: CachedImages, config: TrainConfig, dtype, n_steps: int,
                 g: torch.Generator) -> tuple[float, float]:
    """The hand-written loop: one crop offset and flip for the whole batch. Returns the seconds
    spent making batches and in all."""
    size, cpu = config.img_size, torch.device("cpu")
    data_t = total = 0.0
    src = data.images.shape[-1]
    for _ in range(n_steps):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(data), (config.batch_size,), generator=g)
        top, left = torch.randint(0, src - size + 1, (2,), generator=g).tolist()
        x = data.images[idx, :, top:top + size, left:left + size]
        if torch.rand(1, generator=g).item() < 0.5:
            x = x.flip(3)
        x = resize_center(x, size)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = data.labels[idx]
        t1 = time.perf_counter()
        with autocast(cpu, dtype):
            out = net(x)
        loss = classification_loss(out, y, config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        data_t += t1 - t0
        total += time.perf_counter() - t0
    return data_t, total


def _trainer_steps(trainer, data: CachedImages, config: TrainConfig, n_steps: int,
                   g: torch.Generator, first_step: int) -> tuple[float, float]:
    """``n_steps`` of :func:`~swiftlearn.train.step.timed_step`, the step ``fit`` runs."""
    data_t = total = 0.0
    for i in range(n_steps):
        idx = torch.randint(0, len(data), (config.batch_size,), generator=g)
        gen = batch_generator(config.seed, 0, first_step + i, 0)
        _, d, t = timed_step(trainer, data, idx, config.img_size, config, gen,
                             torch.device("cpu"))
        data_t += d
        total += t
    return data_t, total


def benchmark_throughput(model: str = "swiftformer_xs", data: CachedImages | None = None, *,
                         img_size: int = 112, batch_size: int = 64, steps: int = 20,
                         warmup: int = 3, rounds: int = 2, amp: str = "auto",
                         channels_last: bool = True) -> dict:
    """Training images/s of :func:`swiftlearn.train.fit`'s own step against a plain loop.

    The trainer side runs :func:`swiftlearn.train.step.timed_step` on a
    :func:`~swiftlearn.train.step.build_trainer` made from a ``TrainConfig`` (per-sample random
    resized crops, gradient clipping, the LR schedule, EMA 0.999): the code ``fit`` runs. The
    plain loop is what one writes by hand: a random batch from the uint8 tensor, one random crop
    offset and flip for the whole batch, normalise, forward, loss on both heads, backward, AdamW
    step. Both use the same precision policy (``amp``). They alternate for ``rounds`` rounds of
    ``steps`` steps (after ``warmup`` untimed steps each) and the best round counts.

    Args:
        model: architecture name.
        data: a :class:`~swiftlearn.data.CachedImages` (default: 512 random synthetic images at
            ``img_size + 16`` px).
        img_size, batch_size, steps, warmup, rounds, amp, channels_last: the measurement.

    Returns:
        ``{"trainer": {"images_per_s", "data_share"}, "plain": {...}, "ratio": trainer/plain,
        "img_size", "batch_size", "threads", "precision"}``; ``data_share`` is the fraction of
        step time spent producing the batch.
    """
    if steps < 1 or warmup < 0 or rounds < 1:
        raise ValueError("steps and rounds must be >= 1 and warmup >= 0")
    data = data if data is not None else _synthetic_images(img_size, batch_size)
    config = TrainConfig(model=model, batch_size=batch_size, img_size=img_size, amp=amp,
                         channels_last=channels_last, ema_decay=0.999, epochs=1000,
                         warmup_epochs=0)
    dtype = amp_dtype(amp, "cpu")

    def make():
        torch.manual_seed(0)
        net = build_model(model, num_classes=len(data.classes)).train()
        return net.to(memory_format=torch.channels_last) if channels_last else net

    plain_net = make()
    plain_opt = torch.optim.AdamW(plain_net.parameters(), lr=1e-3, weight_decay=0.05)
    trainer = build_trainer(config, make(), steps_per_epoch=100, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    _plain_steps(plain_net, plain_opt, data, config, dtype, warmup, g)
    _trainer_steps(trainer, data, config, warmup, g, 0)
    done, best = warmup, {"plain": None, "trainer": None}
    for _ in range(rounds):  # alternate, keep each loop's best round
        timed = {"plain": _plain_steps(plain_net, plain_opt, data, config, dtype, steps, g),
                 "trainer": _trainer_steps(trainer, data, config, steps, g, done)}
        done += steps
        for name, (d, t) in timed.items():
            if best[name] is None or t < best[name][1]:
                best[name] = (d, t)
    result = {name: {"images_per_s": steps * batch_size / t, "data_share": d / t}
              for name, (d, t) in best.items()}
    result.update({"ratio": result["trainer"]["images_per_s"] / result["plain"]["images_per_s"],
                   "img_size": img_size, "batch_size": batch_size,
                   "threads": torch.get_num_threads(),
                   "precision": str(dtype or torch.float32)})
    return result


def run_train(model: str = "swiftformer_xs", quick: bool = False, data_root=None,
              cache_size: int = 176, cache_dir=None, profile: bool = True,
              compile: bool = False, sizes=(64, 96), progress: bool = False, **kwargs) -> dict:
    """The ``train`` suite: :func:`benchmark_throughput`, on real images when ``data_root``,
    then (``profile``) where the step's time goes at each of ``sizes``
    (:func:`~swiftlearn.bench.train_profile.profile_training`; ``compile`` adds the
    ``torch.compile`` rows, cold and warm cache, minutes each on two cores).

    With ``data_root`` (an Imagenette root) both loops read the real training images from the
    decoded cache at ``cache_size`` px (built on first use); without it, synthetic images.
    """
    from .train_profile import profile_training

    profile_kw = {"steps": 8, "warmup": 3, "rounds": 2}
    if quick:
        kwargs = {"steps": 2, "warmup": 1, "rounds": 1, "batch_size": 8, **kwargs}
        profile_kw, sizes = {"steps": 1, "warmup": 1, "rounds": 1}, sizes[:1]
    settings = {"model": model, **kwargs, "data": "synthetic"}
    if data_root is not None:
        kwargs["data"] = load_cached(data_root, "train", size=cache_size, cache_dir=cache_dir)
        settings["data"] = (f"Imagenette train ({len(kwargs['data'])} images, decoded cache at "
                            f"{cache_size} px)")
    machine = machine_info()
    result = benchmark_throughput(model=model, **kwargs)
    out = {"suite": "train", "file_stem": f"train-{machine['cpu_kind']['slug']}",
           "machine": machine, "settings": settings, "result": result}
    if profile:
        out["profile"] = profile_training(model, sizes, data=kwargs.get("data"), compile=compile,
                                          progress=progress, **profile_kw)
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = round(os.getloadavg()[0], 2)
    return out
