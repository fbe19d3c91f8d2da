"""A small interpreter for Core ML ML Programs, to check an exported model numerically on Linux.

Core ML itself (``MLModel.predict``) only runs on macOS. But an ``.mlpackage`` is a plain MIL
program (a protobuf of typed ops) plus a weights file, and coremltools can read both back on any
OS (``coremltools.converters.mil.frontend.milproto.load``). This module walks that program op by
op in PyTorch, so on Linux we can still ask: does the *saved package* compute what the PyTorch
model computes?

* Every value is computed in float32. When an op's output is declared ``fp16`` (a program
  converted with ``compute_precision=FLOAT16``), the output is rounded to float16, which is the
  storage precision the device uses between ops. Accumulation inside an op (the sums of a conv,
  say) stays float32 here; the Neural Engine and GPU may accumulate in float16, so treat the fp16
  result as an estimate of the device's error, not a bit-exact replica.
* Compressed weights (``coremltools.optimize.coreml``: linear int8 weights, k-bit palettes) are
  ``constexpr_*`` ops whose inputs are all constants; :data:`CONSTEXPR` decompresses each once,
  in numpy from the op's own attributes, when the interpreter is built (what Core ML does at load
  time), and keeps the compressed form in :attr:`MilInterpreter.compressed`.
* A program declared for one image (``[1, 3, H, W]``) can be run on a batch ``[B, 3, H, W]``:
  axis 0 is then the batch, and the reshapes' leading ``1`` becomes ``B``. Ops that would mix
  images (a transpose, reduction, softmax or concatenation over axis 0) are refused.
* Only the ops below are implemented (what SwiftFormer's programs use, with and without flexible
  input shapes, plus a few common neighbours). Anything else raises ``NotImplementedError`` naming
  the op, when the interpreter is built, not halfway through a run.

Example::

    program = load_program("model.mlpackage")
    interp = MilInterpreter(program)
    out = interp.run({"image": pixels}, fetch=[interp.logits_name()])
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import require

__all__ = ["CONSTEXPR", "OPS", "MilInterpreter", "dtype_name", "load_program", "op_histogram",
           "register_constexpr", "register_op", "unpack_bits"]

#: MIL op type -> handler ``f(**inputs) -> value or tuple of values``.
OPS: dict[str, Callable[..., Any]] = {}


def register_op(*names: str):
    """Decorator registering a handler for one or more MIL op types."""

    def deco(fn):
        for name in names:
            OPS[name] = fn
        return fn

    return deco


#: constexpr op type -> ``f(**numpy inputs) -> numpy array``: decompresses a constant weight.
CONSTEXPR: dict[str, Callable[..., np.ndarray]] = {}


def register_constexpr(*names: str):
    """Decorator registering a decompressor for one or more ``constexpr_*`` op types."""

    def deco(fn):
        for name in names:
            CONSTEXPR[name] = fn
        return fn

    return deco


def load_program(path: str | os.PathLike):
    """Read a saved ``.mlpackage`` back into a MIL ``Program`` with its weights (any OS)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Core ML package at {path}")
    ct = require("coremltools", "reading a Core ML package")
    milproto_load = require("coremltools.converters.mil.frontend.milproto.load").load
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path} is a {spec.WhichOneof('Type')!r} model, not an ML Program; "
                         "convert with convert_to='mlprogram'")
    return milproto_load(spec, spec.specificationVersion, mlmodel.weights_dir)


def op_histogram(program, include_const: bool = False) -> Counter:
    """How often each op type occurs in the program's functions (``const`` left out by default)."""
    return Counter(op.op_type for fn in program.functions.values() for op in fn.operations
                   if include_const or op.op_type != "const")


# --- values -------------------------------------------------------------------------------------

def dtype_name(var) -> str:
    """A MIL value's element type as coremltools spells it: ``"fp16"``, ``"fp32"``, ``"int32"``,
    ``"bool"``, ...; ``"other"`` for non-numeric values (dicts, lists)."""
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    if types.is_tensor(var.sym_type):
        dtype = var.sym_type.get_primitive()
    try:
        return types.builtin_to_string(dtype)
    except KeyError:  # dict, list, ... : not a numeric value
        return "other"


def _to_value(val):
    """A const's value as a torch tensor (floats as float32), a str, or a Python list."""
    if hasattr(val, "ls"):  # mil_list, e.g. the class names of ``classify``
        return list(val.ls)
    if isinstance(val, (str, np.str_)):
        return str(val)
    arr = np.asarray(val)
    if arr.dtype.kind in "US":
        return arr.tolist()
    if arr.dtype.kind == "f":
        return torch.from_numpy(arr.astype(np.float32))
    if arr.dtype.kind == "b":
        return torch.from_numpy(arr.copy())
    return torch.from_numpy(arr.astype(np.int64 if arr.dtype == np.int64 else np.int32))


def _conform(value, dtype: str, round_fp16: bool):
    """Store ``value`` the way the program declares it: fp16 outputs rounded, ints as int32."""
    if not isinstance(value, torch.Tensor):
        return value
    if dtype == "fp16":
        value = value.float()
        return value.half().float() if round_fp16 else value
    if dtype in ("fp32", "fp64"):
        return value.float()
    if dtype.startswith(("int", "uint")):
        return value.to(torch.int32)
    if dtype == "bool":
        return value.bool()
    return value


def _ints(v) -> list[int]:
    return [int(i) for i in (v.flatten().tolist() if isinstance(v, torch.Tensor) else v)]


# --- ops ----------------------------------------------------------------------------------------

_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum,
    "minimum": torch.minimum, "pow": torch.pow, "equal": torch.eq, "not_equal": torch.ne,
    "less": torch.lt, "less_equal": torch.le, "greater": torch.gt, "greater_equal": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or,
}
for _name, _fn in _BINARY.items():
    OPS[_name] = (lambda f: lambda x, y, **_: f(x, y))(_fn)

_UNARY = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp,
    "sqrt": torch.sqrt, "abs": torch.abs, "erf": torch.erf, "silu": F.silu, "floor": torch.floor,
    "ceil": torch.ceil, "sin": torch.sin, "cos": torch.cos, "logical_not": torch.logical_not,
    "identity": lambda x: x, "cast": lambda x: x,  # cast: _conform applies the declared dtype
}
for _name, _fn in _UNARY.items():
    OPS[_name] = (lambda f: lambda x, **_: f(x))(_fn)


@register_op("real_div")
def _real_div(x, y, **_):
    return torch.true_divide(x, y)


@register_op("floor_div")
def _floor_div(x, y, **_):
    return torch.div(x, y, rounding_mode="floor")


@register_op("log")
def _log(x, epsilon=None, **_):
    return torch.log(x + (0.0 if epsilon is None else epsilon))


@register_op("rsqrt")
def _rsqrt(x, epsilon=1e-12, **_):
    return torch.rsqrt(x + epsilon)


@register_op("inverse")
def _inverse(x, epsilon=1e-4, **_):
    return 1.0 / (x + epsilon)


@register_op("clip")
def _clip(x, alpha, beta, **_):
    return torch.clamp(x, float(alpha), float(beta))


@register_op("select")
def _select(cond, a, b, **_):
    return torch.where(cond.bool(), a, b)


@register_op("gelu")
def _gelu(x, mode="EXACT", **_):
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise NotImplementedError(f"gelu mode {mode!r}")


@register_op("softmax")
def _softmax(x, axis=-1, **_):
    return torch.softmax(x, int(axis))


def _reduce(fn):
    def run(x, axes=None, keep_dims=False, **_):
        dims = list(range(x.dim())) if axes is None else _ints(axes)
        return fn(x, dims, bool(keep_dims))

    return run


OPS.update({
    "reduce_sum": _reduce(lambda x, d, k: x.sum(d, keepdim=k)),
    "reduce_mean": _reduce(lambda x, d, k: x.mean(d, keepdim=k)),
    "reduce_max": _reduce(lambda x, d, k: x.amax(d, keepdim=k)),
    "reduce_min": _reduce(lambda x, d, k: x.amin(d, keepdim=k)),
    "reduce_l2_norm": _reduce(lambda x, d, k: x.square().sum(d, keepdim=k).sqrt()),
    "reduce_sum_square": _reduce(lambda x, d, k: x.square().sum(d, keepdim=k)),
})


@register_op("conv")
def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None,
          groups=1, **_):
    spatial = x.dim() - 2
    strides = _ints(strides) if strides is not None else [1] * spatial
    dilations = _ints(dilations) if dilations is not None else [1] * spatial
    if spatial != 2:
        raise NotImplementedError(f"conv over {spatial} spatial dims (only 2-D is implemented)")
    if pad_type == "custom":
        top, bottom, left, right = _ints(pad)
    elif pad_type == "valid":
        top = bottom = left = right = 0
    elif pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(x.shape[2:], weight.shape[2:], strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads += [large, small] if pad_type == "same_lower" else [small, large]
        top, bottom, left, right = pads
    else:
        raise NotImplementedError(f"conv pad_type {pad_type!r}")
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, weight, bias, stride=strides, dilation=dilations, groups=int(groups))


@register_op("linear")
def _linear(x, weight, bias=None, **_):
    return F.linear(x, weight, bias)


@register_op("matmul")
def _matmul(x, y, transpose_x=False, transpose_y=False, **_):
    x = x.transpose(-1, -2) if transpose_x else x
    y = y.transpose(-1, -2) if transpose_y else y
    return torch.matmul(x, y)


@register_op("batch_norm")
def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, variance, gamma, beta, training=False, eps=float(epsilon))


@register_op("layer_norm")
def _layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5, **_):
    dims = _ints(axes) if axes is not None else list(range(x.dim()))
    mean = x.mean(dims, keepdim=True)
    y = (x - mean) / torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + float(epsilon))
    return y * (1.0 if gamma is None else gamma) + (0.0 if beta is None else beta)


@register_op("reshape")
def _reshape(x, shape, **_):
    shape = _ints(shape)
    if len(shape) == x.dim():  # MIL: 0 inherits the input's dim at that position
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@register_op("transpose")
def _transpose(x, perm, **_):
    return x.permute(_ints(perm))


@register_op("tile")
def _tile(x, reps, **_):
    return x.repeat(_ints(reps))


@register_op("squeeze")
def _squeeze(x, axes=None, **_):
    return x.squeeze() if axes is None else x.squeeze(tuple(_ints(axes)))


@register_op("expand_dims")
def _expand_dims(x, axes, **_):
    for a in sorted(a % (x.dim() + len(_ints(axes))) for a in _ints(axes)):
        x = x.unsqueeze(a)
    return x


@register_op("shape")
def _shape(x, **_):
    return torch.tensor(list(x.shape), dtype=torch.int32)


@register_op("gather")
def _gather(x, indices, axis=0, batch_dims=0, **_):
    if int(batch_dims) != 0:
        raise NotImplementedError("gather with batch_dims != 0")
    return torch.as_tensor(np.take(x.numpy(), indices.numpy(), axis=int(axis)))


@register_op("concat")
def _concat(values, axis, interleave=False, **_):
    if bool(interleave):
        raise NotImplementedError("concat with interleave=True")
    values = [v.reshape(1) if v.dim() == 0 else v for v in values]
    return torch.cat(values, int(axis))


@register_op("slice_by_size")
def _slice_by_size(x, begin, size, **_):
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(_ints(begin), _ints(size)))
    return x[index]


@register_op("classify")
def _classify(probabilities, classes, **_):
    if probabilities.dim() == 2 and probabilities.shape[0] > 1:  # a batched run: one per image
        rows = probabilities.tolist()
        return ([classes[int(np.argmax(r))] for r in rows], [dict(zip(classes, r)) for r in rows])
    probs = probabilities.reshape(-1).tolist()
    best = int(np.argmax(probs))
    return classes[best], dict(zip(classes, probs))


def _batched_args(op, args: dict, batch: int) -> dict:
    """``args`` of ``op`` for a batch of ``batch`` images through a program declared for one.

    Reshapes get ``batch`` as their leading size; an op that would mix the images of the batch
    (anything acting across axis 0) raises, so a batched run is either right or refused.
    """
    kind = op.op_type

    def refuse(why):
        raise NotImplementedError(f"a batched run cannot execute {kind} {op.name!r}: {why}; "
                                  "run one image at a time (batch of 1)")

    if kind == "reshape":
        shape = _ints(args["shape"])
        if shape[0] != 1 or args["x"].shape[0] != batch:
            refuse(f"its target shape {shape} does not keep axis 0 as the batch")
        return {**args, "shape": [batch, *shape[1:]]}
    if kind == "transpose" and _ints(args["perm"])[0] != 0:
        refuse("it moves axis 0")
    if kind.startswith("reduce_"):
        axes = args.get("axes")
        if axes is None or 0 in [a % args["x"].dim() for a in _ints(axes)]:
            refuse("it reduces over axis 0")
    if kind == "softmax" and int(args.get("axis", -1)) % args["x"].dim() == 0:
        refuse("it normalises over axis 0")
    if kind == "concat" and int(args["axis"]) % max(v.dim() for v in args["values"]) == 0:
        refuse("it concatenates along axis 0")
    if kind in ("shape", "slice_by_size", "gather", "expand_dims", "squeeze") or (
            kind == "tile" and _ints(args["reps"])[0] != 1):
        refuse("it is not known to be batch-independent")
    return args


# --- compressed constants (constexpr ops) --------------------------------------------------------

def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """``count`` unsigned ``nbits``-bit integers from bytes packed least significant bit first.

    Core ML's palettised weights (iOS16 ``constexpr_lut_to_dense``) store index ``i`` in bits
    ``i * nbits .. (i + 1) * nbits - 1`` of the byte stream, counting from bit 0 (the LSB) of byte
    0; an index may straddle two bytes. Vectorised: the bytes become a little-endian bit stream,
    every ``nbits`` consecutive bits one index.
    """
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size * 8 < nbits * count:
        raise ValueError(f"{packed.size} bytes hold fewer than {count} {nbits}-bit indices")
    bits = np.unpackbits(packed, bitorder="little")[: nbits * count].reshape(count, nbits)
    return bits.astype(np.int64) @ (1 << np.arange(nbits, dtype=np.int64))


def _axis_shape(rank: int, axis: int, n: int) -> list[int]:
    shape = [1] * rank
    shape[axis] = n
    return shape


@register_constexpr("constexpr_affine_dequantize")
def _affine_dequantize(quantized_data, zero_point, scale, axis, **_):
    """``scale * (quantized_data - zero_point)``; a vector scale/zero point runs along ``axis``."""
    q = np.asarray(quantized_data)
    axis = int(axis) % q.ndim
    scale, zero = np.asarray(scale, np.float32), np.asarray(zero_point, np.float32)
    if scale.ndim == 1 and scale.size > 1:
        scale = scale.reshape(_axis_shape(q.ndim, axis, scale.size))
    if zero.ndim == 1 and zero.size > 1:
        zero = zero.reshape(_axis_shape(q.ndim, axis, zero.size))
    return (q.astype(np.float32) - zero) * scale


@register_constexpr("constexpr_lut_to_dense")
def _lut_to_dense(indices, lut, shape, **_):
    """iOS16 palette: ``lut[index]`` for every element, indices ``log2(len(lut))`` bits each."""
    lut = np.asarray(lut)
    if lut.ndim != 1:
        raise NotImplementedError(f"a {lut.ndim}-D lut (iOS18 per-block palettes); only the "
                                  "iOS16 form (one palette per tensor) is implemented")
    nbits = int(round(math.log2(lut.size)))
    if 1 << nbits != lut.size:
        raise ValueError(f"a palette has 2**n_bits entries, got {lut.size}")
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    count = int(np.prod(shape))
    return lut.astype(np.float32)[unpack_bits(indices, nbits, count)].reshape(shape)


# --- interpreter --------------------------------------------------------------------------------

class MilInterpreter:
    """Run one function of a MIL program (from :func:`load_program` or ``mlmodel._mil_program``).

    Args:
        program: a ``coremltools`` MIL ``Program``.
        function: which function to run (``"main"`` for converted models).

    Attributes:
        constants: ``{name: value}`` of every ``const`` op (weights as float32 tensors). Edit an
            entry to perturb the program, e.g. as a negative control for a numerical check.
        compressed: ``{name: {"op": constexpr op type, input: numpy array}}`` for every
            compressed weight (``constexpr_*`` op). Edit an entry and call :meth:`decompress`
            to perturb the compressed form (a negative control for the decompression).
        input_names, output_names: the function's inputs and outputs.

    Raises:
        NotImplementedError: the program uses an op (or control flow) this interpreter lacks.
    """

    def __init__(self, program, function: str = "main"):
        if function not in program.functions:
            raise ValueError(f"the program has no function {function!r}; it has "
                             f"{sorted(program.functions)}")
        fn = program.functions[function]
        self.function = fn
        self.input_names = list(fn.inputs)
        self.output_names = [v.name for v in fn.outputs]
        self.constants: dict[str, Any] = {}
        self.compressed: dict[str, dict[str, Any]] = {}
        self._compressed_dtype: dict[str, str] = {}
        self._ops = []
        missing: Counter = Counter()
        for op in fn.operations:
            if op.op_type == "const":
                self.constants[op.outputs[0].name] = _to_value(op.outputs[0].val)
            elif op.op_type.startswith("constexpr_"):
                if op.op_type not in CONSTEXPR:
                    missing[op.op_type] += 1
                    continue
                raw = {key: np.array(var.val) for key, var in op.inputs.items()}
                if any(v.dtype == object for v in raw.values()):
                    missing[f"{op.op_type} (non-constant input)"] += 1
                    continue
                out = op.outputs[0]
                self.compressed[out.name] = {"op": op.op_type, **raw}
                self._compressed_dtype[out.name] = dtype_name(out)
            elif getattr(op, "blocks", None):
                missing[f"{op.op_type} (control flow)"] += 1
            elif op.op_type not in OPS:
                missing[op.op_type] += 1
            else:
                self._ops.append(op)
        if missing:
            listed = ", ".join(f"{name} (x{n})" for name, n in sorted(missing.items()))
            raise NotImplementedError(
                f"swiftlearn.export.mil cannot run MIL op(s): {listed}. Add a handler with "
                "`@swiftlearn.export.mil.register_op(name)` (see the MIL op reference in "
                "coremltools' docs), or convert the model without them.")
        self.decompress()
        # after which op each intermediate value can be dropped (keeps 224x224 runs small)
        self._last_use: dict[str, int] = {}
        for i, op in enumerate(self._ops):
            for var in self._input_vars(op):
                self._last_use[var.name] = i

    @staticmethod
    def _input_vars(op) -> Iterable:
        for value in op.inputs.values():
            yield from (value if isinstance(value, (list, tuple)) else [value])

    def decompress(self) -> None:
        """(Re)build the dense weight of every entry of :attr:`compressed` into
        :attr:`constants`, rounded to the op's declared output type (fp16 for an fp16 program).
        """
        for name, entry in self.compressed.items():
            inputs = {k: v for k, v in entry.items() if k != "op"}
            dense = np.asarray(CONSTEXPR[entry["op"]](**inputs))
            if self._compressed_dtype[name] == "fp16":
                dense = dense.astype(np.float16)
            self.constants[name] = _to_value(dense)

    def logits_name(self) -> str:
        """Name of the value the (last) softmax turns into probabilities: the logits."""
        softmaxes = [op for op in self._ops if op.op_type == "softmax"]
        if not softmaxes:
            raise ValueError("the program has no softmax op, so no logits to fetch")
        return softmaxes[-1].inputs["x"].name

    def run(self, inputs: dict[str, Any], fetch: Iterable[str] = (),
            round_fp16: bool = True) -> dict[str, Any]:
        """Evaluate the function.

        Args:
            inputs: ``{input name: array}``; an image input takes float RGB pixels 0..255
                ``[1, 3, H, W]`` (what Core ML feeds the program after reading the picture), or
                ``[B, 3, H, W]`` for a batch through a program declared for one image (the
                outputs then have ``B`` rows; ``classify`` gives a list per image).
            fetch: names of intermediate values to return as well (e.g. :meth:`logits_name`).
            round_fp16: round every fp16-declared output to float16 (``False`` shows how much of
                an fp16 program's error is storage rounding).

        Returns:
            ``{name: value}`` for the function's outputs and ``fetch``; tensors as numpy arrays.
        """
        unknown = set(inputs) - set(self.input_names)
        if unknown or set(self.input_names) - set(inputs):
            raise ValueError(f"inputs must be exactly {self.input_names}, got {sorted(inputs)}")
        fetch = list(fetch)
        keep = set(self.output_names) | set(fetch)
        env: dict[str, Any] = {}
        batch = 1
        for name, var in self.function.inputs.items():
            value = torch.as_tensor(np.asarray(inputs[name]))
            shape = list(var.shape)
            if len(shape) == 4 and shape[0] == 1 and value.dim() == 4 and value.shape[0] > 1:
                batch = int(value.shape[0])
                shape[0] = batch
            if value.dim() != len(shape) or any(isinstance(s, int) and s != t
                                                for s, t in zip(shape, value.shape)):
                raise ValueError(f"input {name!r} has shape {tuple(value.shape)}, the program "
                                 f"expects {tuple(shape)}")
            env[name] = _conform(value, dtype_name(var), round_fp16)
        for i, op in enumerate(self._ops):
            args = {}
            for key, value in op.inputs.items():
                if isinstance(value, (list, tuple)):
                    args[key] = [self._lookup(v, env) for v in value]
                else:
                    args[key] = self._lookup(value, env)
            if batch > 1:
                args = _batched_args(op, args, batch)
            try:
                result = OPS[op.op_type](**args)
            except NotImplementedError as e:
                raise NotImplementedError(f"MIL op {op.op_type} ({op.name}): {e}") from e
            results = result if isinstance(result, tuple) else (result,)
            for var, value in zip(op.outputs, results):
                env[var.name] = _conform(value, dtype_name(var), round_fp16)
            for var in self._input_vars(op):
                if self._last_use.get(var.name) == i and var.name not in keep:
                    env.pop(var.name, None)
        missing = [n for n in fetch if n not in env and n not in self.constants]
        if missing:
            raise KeyError(f"no value named {missing} in the program")
        return {n: self._numpy(env[n] if n in env else self.constants[n])
                for n in self.output_names + fetch}

    def _lookup(self, var, env):
        if var.name in env:
            return env[var.name]
        if var.name in self.constants:
            return self.constants[var.name]
        raise KeyError(f"value {var.name!r} used before it was computed")

    @staticmethod
    def _numpy(value):
        return value.numpy() if isinstance(value, torch.Tensor) else value
