"""``swiftlearn bench``: CPU latency of SwiftFormer and its peers, measured in one process.

Every model runs batch 1 at 224x224 (``--size``) in eval mode under ``torch.inference_mode``.
For each thread count, every entry is warmed up, then the entries take turns for ``rounds``
rounds of ``repeats`` timed calls each (the starting entry rotates), so slow drifts of a shared
machine hit all of them alike. Reported: the median and the interquartile range of all timed
calls, and the speed relative to timm's eager ``swiftformer_xs`` (``t_ref / t``, > 1 is faster).
Absolute times on a shared machine move from run to run; the ratios are the result.

Entries:

* swiftlearn ``swiftformer_xs/s/l1/l3``: ``eager`` (the model as trained), ``fused``
  (:func:`swiftlearn.fuse.fuse`), ``fused+compile`` (``torch.compile`` of the fused model, with
  ``--compile``), ``onnxruntime`` (the eager model exported by ``swiftlearn.export.to_onnx``,
  when the export extra is installed);
* timm's ``swiftformer_*`` with the same weights, and ``mobilevitv2_050/075/100``,
  ``efficientformer_l1`` with random weights (``pip install -e ".[dev]"`` for timm).

``--suite train`` instead times training throughput with
:func:`benchmark_throughput`. Results go to ``<out>/<suite>-<cpu kind>.md`` and ``.json``
(one table per CPU kind, :func:`~swiftlearn.utils.cpu_kind`; the mixers suite's to
``<out>/mixers.md``).
"""

from .cli import add_cli
from .common import machine_info
from .latency import (
           BACKENDS,
           DEFAULT_MODELS,
           PEER_SIZES,
           PEERS,
           REFERENCE,
           Entry,
           _timm,  # noqa: F401  (notebook 04 asks it whether timm is installed)
           run_latency,
           size_range,
)
from .mixers import MIXER_VARIANTS, run_mixers
from .report import to_markdown, write
from .throughput import benchmark_throughput, run_train

__all__ = ["BACKENDS", "DEFAULT_MODELS", "MIXER_VARIANTS", "PEERS", "PEER_SIZES", "REFERENCE",
           "Entry", "add_cli", "benchmark_throughput", "machine_info", "run_latency", "run_mixers",
           "run_train", "size_range", "to_markdown", "write"]
