"""Imagenette and the photos the notebooks look at.

Imagenette (fast.ai's ten-class ImageNet subset) in its official layout: ``train/<wnid>/``,
``val/<wnid>/`` and ``noisy_imagenette.csv``.

* :func:`find_root` / :func:`check_root` locate a root, or say what is missing and how to get it;
  :func:`download_imagenette` fetches an official archive (160 px, 320 px or full; md5-checked,
  retried, extracted atomically).
* :class:`ImagenetteDataset` (PIL, decoded per access; greyscale -> RGB; optional noisy labels)
  with :func:`train_transform` / :func:`eval_transform` (ImageNet normalisation).
* On a 2-core CPU JPEG decoding would dominate a training step, so training reads
  :func:`load_cached`: every image decoded once to uint8 ``[N, 3, S, S]`` and stored on disk,
  keyed by the source files and the resolution. :func:`random_resized_crop_flip` then augments a
  whole uint8 batch with one ``grid_sample`` (a few % of the step time) and :func:`resize_center`
  prepares evaluation batches. Corrupt images: the cache skips them with a warning naming them
  (``on_corrupt="error"`` raises instead); the PIL dataset raises naming the file.

Where data is looked for, in order:

1. an explicit ``root`` argument;
2. the ``SWIFTLEARN_DATA`` environment variable (an Imagenette root: ``train/``, ``val/``);
3. the default cache folder ``$XDG_CACHE_HOME/swiftlearn`` (``~/.cache/swiftlearn``), where
   downloads go.

Photos for attention maps come from real images only: ``SWIFTLEARN_PHOTOS`` (a folder of
JPEG/PNG files), else an ``imagenet-sample-images`` folder beside the Imagenette root, else
Imagenette's validation images, else the photos that ship inside scikit-image (so notebooks 01-03
run on a clean clone without network).

The package has one module per concept: :mod:`~swiftlearn.data.imagenette` (classes, locating,
checking, downloading, listing samples), :mod:`~swiftlearn.data.photos`,
:mod:`~swiftlearn.data.datasets` (PIL + torchvision), :mod:`~swiftlearn.data.cache` (the decoded
cache), :mod:`~swiftlearn.data.augment` (batched augmentation, batch order) and
:mod:`~swiftlearn.data.synthetic`.
"""

# normalize, IMAGENET_MEAN and IMAGENET_STD live in swiftlearn.utils; re-exported here for the
# notebooks and code that import them from swiftlearn.data
from ..utils import IMAGENET_MEAN, IMAGENET_STD, normalize
from .augment import batch_indices, mix_batch, random_resized_crop_flip, resize_center
from .cache import CachedImages, cache_usage, load_cached
from .datasets import ImagenetteDataset, eval_transform, load_rgb, train_transform
from .imagenette import (
    IMAGENETTE_CLASSES,
    IMAGENETTE_URLS,
    NOISE_LEVELS,
    NOISY_CSV,
    SPLITS,
    check_root,
    class_names,
    default_cache_dir,
    download_imagenette,
    find_root,
    list_samples,
)
from .photos import Photo, load_photos
from .synthetic import synthetic_imagenette

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENETTE_CLASSES",
    "IMAGENETTE_URLS",
    "NOISE_LEVELS",
    "NOISY_CSV",
    "SPLITS",
    "CachedImages",
    "ImagenetteDataset",
    "Photo",
    "batch_indices",
    "cache_usage",
    "check_root",
    "class_names",
    "default_cache_dir",
    "download_imagenette",
    "eval_transform",
    "find_root",
    "list_samples",
    "load_cached",
    "load_photos",
    "load_rgb",
    "mix_batch",
    "normalize",
    "random_resized_crop_flip",
    "resize_center",
    "synthetic_imagenette",
    "train_transform",
]
