"""Neural-network ops: 2-D convolution, pooling, layer and RMS normalization (NCHW)."""

from __future__ import annotations

from collections.abc import Sequence

from pullweights.descriptor import TensorDescriptor
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.ops_elementwise import FLOATS
from pullweights.graph.shapes import normalize_axis, same_dim

__all__ = ["MAX_WINDOW_PARAM", "NNOps"]

#: Upper bound on every kernel size, stride, dilation and padding (WebNN validates these so
#: output-size arithmetic cannot overflow; 65535 is far above any real model).
MAX_WINDOW_PARAM = 65535


def _pair(op: str, what: str, value: Sequence[int] | None, default: int, n: int = 2) -> list[int]:
    out = [default] * n if value is None else [int(v) for v in value]
    if len(out) != n:
        raise GraphError(f"{op}: {what} needs {n} values, got {list(out)}")
    low = 0 if what == "padding" else 1
    for v in out:
        if not low <= v <= MAX_WINDOW_PARAM:
            raise GraphError(f"{op}: {what} {out} must lie in [{low}, {MAX_WINDOW_PARAM}]")
    return out


def _window_out(
    op: str,
    size: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_begin: int,
    pad_end: int,
    axis: str,
) -> int:
    effective = (kernel - 1) * dilation + 1
    padded = size + pad_begin + pad_end
    if effective > padded:
        raise GraphError(
            f"{op}: window {kernel} (dilated to {effective}) is larger than the padded "
            f"input {axis} {padded}"
        )
    return (padded - effective) // stride + 1


class NNOps(BuilderCore):
    """Convolution, pooling and normalization (``input_layout`` is always NCHW)."""

    def conv2d(
        self,
        x: Operand,
        filter: Operand,
        bias: Operand | None = None,
        *,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        groups: int = 1,
    ) -> Operand:
        """2-D convolution of ``x[N, C, H, W]`` with ``filter[O, C / groups, KH, KW]``.

        ``padding`` is ``[top, bottom, left, right]``. Checks ``O % groups == 0``,
        ``C == filter_channels * groups`` and bounds every window parameter.
        """
        op = "conv2d"
        self._check_operands(op, x, filter, bias)
        dtype = self._same_dtype(op, x, filter, *([bias] if bias is not None else []))
        self._check_dtype(op, x, FLOATS, "input")
        if x.rank != 4 or filter.rank != 4:
            raise GraphError(f"{op}: input and filter must be 4-D, got {x.shape}, {filter.shape}")
        if not filter.descriptor.is_static:
            raise GraphError(f"{op}: filter shape must be static, got {filter.shape}")
        o, c_per_group, kh, kw = filter.descriptor.static_shape
        n, c, h, w = x.shape
        if not isinstance(h, int) or not isinstance(w, int):
            raise GraphError(f"{op}: spatial dims must be static, got {list(x.shape)}")
        if groups < 1 or groups > MAX_WINDOW_PARAM:
            raise GraphError(f"{op}: groups must lie in [1, {MAX_WINDOW_PARAM}], got {groups}")
        if o % groups:
            raise GraphError(f"{op}: output channels {o} must be divisible by groups {groups}")
        same_dim(
            op,
            f"input channels and filter channels * groups ({c_per_group}*{groups})",
            c,
            c_per_group * groups,
        )
        _pair(op, "kernel size", [kh, kw], 1)
        pads = _pair(op, "padding", padding, 0, 4)
        st = _pair(op, "strides", strides, 1)
        dil = _pair(op, "dilations", dilations, 1)
        if bias is not None and tuple(bias.shape) != (o,):
            raise GraphError(f"{op}: bias must have shape [{o}], got {list(bias.shape)}")
        oh = _window_out(op, h, kh, st[0], dil[0], pads[0], pads[1], "height")
        ow = _window_out(op, w, kw, st[1], dil[1], pads[2], pads[3], "width")
        return self._emit1(
            "Conv",
            [x, filter, bias],
            TensorDescriptor(dtype, (n, o, oh, ow)),
            label=op,
            strides=st,
            dilations=dil,
            group=groups,
            pads=[pads[0], pads[2], pads[1], pads[3]],
        )

    def _pool(
        self,
        op: str,
        onnx_op: str,
        x: Operand,
        window: Sequence[int],
        padding: Sequence[int] | None,
        strides: Sequence[int] | None,
        dilations: Sequence[int] | None,
    ) -> Operand:
        self._check_operands(op, x)
        self._check_dtype(op, x, FLOATS, "input")
        if x.rank != 4:
            raise GraphError(f"{op}: input must be 4-D NCHW, got {x.shape}")
        n, c, h, w = x.shape
        if not isinstance(h, int) or not isinstance(w, int):
            raise GraphError(f"{op}: spatial dims must be static, got {list(x.shape)}")
        win = _pair(op, "window dimensions", window, 1)
        pads = _pair(op, "padding", padding, 0, 4)
        st = _pair(op, "strides", strides, 1)
        dil = _pair(op, "dilations", dilations, 1)
        oh = _window_out(op, h, win[0], st[0], dil[0], pads[0], pads[1], "height")
        ow = _window_out(op, w, win[1], st[1], dil[1], pads[2], pads[3], "width")
        attrs: dict[str, object] = {
            "kernel_shape": win,
            "strides": st,
            "pads": [pads[0], pads[2], pads[1], pads[3]],
        }
        if onnx_op == "MaxPool":
            attrs["dilations"] = dil
        elif dil != [1, 1]:
            raise GraphError(f"{op}: dilations are not supported for average pooling")
        else:
            attrs["count_include_pad"] = 0
        return self._emit1(
            onnx_op, [x], TensorDescriptor(x.dtype, (n, c, oh, ow)), label=op, **attrs
        )

    def average_pool2d(
        self,
        x: Operand,
        window: Sequence[int],
        *,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
    ) -> Operand:
        """Mean over each window (padding excluded from the count)."""
        return self._pool("average_pool2d", "AveragePool", x, window, padding, strides, None)

    def max_pool2d(
        self,
        x: Operand,
        window: Sequence[int],
        *,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
    ) -> Operand:
        """Maximum over each window."""
        return self._pool("max_pool2d", "MaxPool", x, window, padding, strides, dilations)

    def _norm_params(self, op: str, x: Operand, scale: Operand | None, axis: int) -> int:
        self._check_dtype(op, x, FLOATS, "input")
        axis = normalize_axis(op, axis, x.rank)
        if scale is not None:
            if scale.dtype != x.dtype:
                raise GraphError(f"{op}: scale dtype {scale.dtype} differs from input {x.dtype}")
            if tuple(scale.shape) != tuple(x.shape[axis:]):
                raise GraphError(
                    f"{op}: scale {scale.origin} must have shape {list(x.shape[axis:])}, "
                    f"got {list(scale.shape)}"
                )
        return axis

    def layer_normalization(
        self,
        x: Operand,
        scale: Operand | None = None,
        bias: Operand | None = None,
        *,
        axis: int = -1,
        epsilon: float = 1e-5,
    ) -> Operand:
        """Normalize over the trailing axes from ``axis`` to zero mean, unit variance."""
        op = "layer_normalization"
        self._check_operands(op, x, scale, bias)
        axis = self._norm_params(op, x, scale, axis)
        if scale is None:
            import numpy as np

            normalized = TensorDescriptor(x.dtype, x.shape[axis:])
            if not normalized.is_static:
                raise GraphError(
                    f"{op}: normalized dims {list(x.shape[axis:])} are symbolic; pass a scale"
                )
            scale = self.constant(np.ones(normalized.static_shape, dtype=normalized.numpy_dtype))
        if bias is not None and tuple(bias.shape) != tuple(scale.shape):
            raise GraphError(f"{op}: bias must have shape {list(scale.shape)}")
        return self._emit1(
            "LayerNormalization",
            [x, scale, bias],
            x.descriptor,
            label=op,
            axis=axis,
            epsilon=float(epsilon),
        )

    def rms_normalization(
        self, x: Operand, scale: Operand, *, axis: int = -1, epsilon: float = 1e-6
    ) -> Operand:
        """``x / sqrt(mean(x**2) + epsilon) * scale`` over the trailing axes from ``axis``."""
        op = "rms_normalization"
        self._check_operands(op, x, scale)
        axis = self._norm_params(op, x, scale, axis)
        return self._emit1(
            "SimplifiedLayerNormalization",
            [x, scale],
            x.descriptor,
            label=op,
            axis=axis,
            epsilon=float(epsilon),
        )
