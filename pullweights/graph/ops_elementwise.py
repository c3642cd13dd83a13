"""Elementwise ops: binary math with broadcasting, comparisons, unary math, activations."""

from __future__ import annotations

from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import DataType
from pullweights.errors import GraphError
from pullweights.graph.core import BuilderCore
from pullweights.graph.operand import Operand
from pullweights.graph.shapes import broadcast_shapes

__all__ = ["ElementwiseOps"]

FLOATS: tuple[DataType, ...] = ("float32", "float16")
NUMBERS: tuple[DataType, ...] = ("float32", "float16", "int64", "int32", "uint32", "int8", "uint8")
#: Types with a sign (onnxruntime's CPU ``Neg`` has no unsigned kernels).
SIGNED: tuple[DataType, ...] = ("float32", "float16", "int64", "int32", "int8")


class ElementwiseOps(BuilderCore):
    """Binary and unary elementwise ops. Operands of a binary op share one dtype."""

    def _binary(
        self,
        op: str,
        onnx_op: str,
        a: Operand,
        b: Operand,
        *,
        out_dtype: DataType | None = None,
        allowed: tuple[DataType, ...] = NUMBERS,
    ) -> Operand:
        self._check_operands(op, a, b)
        dtype = self._same_dtype(op, a, b)
        if dtype not in allowed:
            raise GraphError(f"{op}: dtype {dtype} is not supported; expected {', '.join(allowed)}")
        shape = broadcast_shapes(op, a.shape, b.shape)
        return self._emit1(onnx_op, [a, b], TensorDescriptor(out_dtype or dtype, shape), label=op)

    def add(self, a: Operand, b: Operand) -> Operand:
        """``a + b`` with broadcasting."""
        return self._binary("add", "Add", a, b)

    def sub(self, a: Operand, b: Operand) -> Operand:
        """``a - b`` with broadcasting."""
        return self._binary("sub", "Sub", a, b)

    def mul(self, a: Operand, b: Operand) -> Operand:
        """``a * b`` with broadcasting."""
        return self._binary("mul", "Mul", a, b)

    def div(self, a: Operand, b: Operand) -> Operand:
        """``a / b`` with broadcasting (integer division truncates, as in ONNX)."""
        return self._binary("div", "Div", a, b)

    def pow(self, a: Operand, b: Operand) -> Operand:
        """``a ** b`` for floating point operands."""
        return self._binary("pow", "Pow", a, b, allowed=FLOATS)

    def max(self, a: Operand, b: Operand) -> Operand:
        """Elementwise maximum."""
        return self._binary("max", "Max", a, b)

    def min(self, a: Operand, b: Operand) -> Operand:
        """Elementwise minimum."""
        return self._binary("min", "Min", a, b)

    def equal(self, a: Operand, b: Operand) -> Operand:
        """``a == b`` as bool."""
        return self._binary("equal", "Equal", a, b, out_dtype="bool", allowed=(*NUMBERS, "bool"))

    def greater(self, a: Operand, b: Operand) -> Operand:
        """``a > b`` as bool."""
        return self._binary("greater", "Greater", a, b, out_dtype="bool")

    def greater_or_equal(self, a: Operand, b: Operand) -> Operand:
        """``a >= b`` as bool."""
        return self._binary("greater_or_equal", "GreaterOrEqual", a, b, out_dtype="bool")

    def lesser(self, a: Operand, b: Operand) -> Operand:
        """``a < b`` as bool."""
        return self._binary("lesser", "Less", a, b, out_dtype="bool")

    def lesser_or_equal(self, a: Operand, b: Operand) -> Operand:
        """``a <= b`` as bool."""
        return self._binary("lesser_or_equal", "LessOrEqual", a, b, out_dtype="bool")

    def logical_and(self, a: Operand, b: Operand) -> Operand:
        """Elementwise AND of bool operands."""
        return self._binary("logical_and", "And", a, b, allowed=("bool",))

    def logical_or(self, a: Operand, b: Operand) -> Operand:
        """Elementwise OR of bool operands."""
        return self._binary("logical_or", "Or", a, b, allowed=("bool",))

    # ------------------------------------------------------------------ unary
    def _unary(
        self,
        op: str,
        onnx_op: str,
        x: Operand,
        allowed: tuple[DataType, ...] = FLOATS,
        **attrs: object,
    ) -> Operand:
        self._check_operands(op, x)
        self._check_dtype(op, x, allowed, "input")
        return self._emit1(onnx_op, [x], x.descriptor, label=op, **attrs)

    def abs(self, x: Operand) -> Operand:
        """``|x|``."""
        return self._unary("abs", "Abs", x, NUMBERS)

    def neg(self, x: Operand) -> Operand:
        """``-x``."""
        return self._unary("neg", "Neg", x, SIGNED)

    def exp(self, x: Operand) -> Operand:
        """``e ** x``."""
        return self._unary("exp", "Exp", x)

    def log(self, x: Operand) -> Operand:
        """Natural logarithm."""
        return self._unary("log", "Log", x)

    def sqrt(self, x: Operand) -> Operand:
        """Square root."""
        return self._unary("sqrt", "Sqrt", x)

    def reciprocal(self, x: Operand) -> Operand:
        """``1 / x``."""
        return self._unary("reciprocal", "Reciprocal", x)

    def sin(self, x: Operand) -> Operand:
        """Sine."""
        return self._unary("sin", "Sin", x)

    def cos(self, x: Operand) -> Operand:
        """Cosine."""
        return self._unary("cos", "Cos", x)

    def floor(self, x: Operand) -> Operand:
        """Round down."""
        return self._unary("floor", "Floor", x)

    def ceil(self, x: Operand) -> Operand:
        """Round up."""
        return self._unary("ceil", "Ceil", x)

    def erf(self, x: Operand) -> Operand:
        """The error function."""
        return self._unary("erf", "Erf", x)

    def tanh(self, x: Operand) -> Operand:
        """Hyperbolic tangent."""
        return self._unary("tanh", "Tanh", x)

    def sigmoid(self, x: Operand) -> Operand:
        """``1 / (1 + e ** -x)``."""
        return self._unary("sigmoid", "Sigmoid", x)

    def relu(self, x: Operand) -> Operand:
        """``max(x, 0)``."""
        return self._unary("relu", "Relu", x)

    def softplus(self, x: Operand) -> Operand:
        """``log(1 + e ** x)``."""
        return self._unary("softplus", "Softplus", x)

    def leaky_relu(self, x: Operand, alpha: float = 0.01) -> Operand:
        """``x`` if positive, else ``alpha * x``."""
        return self._unary("leaky_relu", "LeakyRelu", x, alpha=float(alpha))

    def gelu(self, x: Operand, approximate: str = "none") -> Operand:
        """Gaussian error linear unit; ``approximate="tanh"`` for the tanh form."""
        if approximate not in ("none", "tanh"):
            raise GraphError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return self._unary("gelu", "Gelu", x, approximate=approximate)

    def silu(self, x: Operand) -> Operand:
        """``x * sigmoid(x)`` (swish)."""
        return self.mul(x, self.sigmoid(x))

    def logical_not(self, x: Operand) -> Operand:
        """Elementwise NOT of a bool operand."""
        return self._unary("logical_not", "Not", x, ("bool",))

    def clamp(
        self, x: Operand, min_value: float | None = None, max_value: float | None = None
    ) -> Operand:
        """Limit ``x`` to ``[min_value, max_value]`` (either bound may be omitted)."""
        self._check_operands("clamp", x)
        self._check_dtype("clamp", x, NUMBERS, "input")
        if min_value is not None and max_value is not None and min_value > max_value:
            raise GraphError(f"clamp: min_value {min_value} > max_value {max_value}")
        np_dtype = x.descriptor.numpy_dtype
        lo = None if min_value is None else self.constant(np_dtype.type(min_value))
        hi = None if max_value is None else self.constant(np_dtype.type(max_value))
        return self._emit1("Clip", [x, lo, hi], x.descriptor, label="clamp")

    def cast(self, x: Operand, dtype: str) -> Operand:
        """Convert to another data type."""
        from pullweights.dtypes import check_dtype, to_onnx

        self._check_operands("cast", x)
        try:
            dt = check_dtype(dtype)
        except ValueError as exc:
            raise GraphError(f"cast: {exc}") from None
        return self._emit1("Cast", [x], TensorDescriptor(dt, x.shape), label="cast", to=to_onnx(dt))

    def where(self, condition: Operand, a: Operand, b: Operand) -> Operand:
        """``a`` where ``condition`` is true, else ``b`` (all three broadcast)."""
        self._check_operands("where", condition, a, b)
        self._check_dtype("where", condition, ("bool",), "condition")
        dtype = self._same_dtype("where", a, b)
        self._check_dtype("where", a, NUMBERS, "value")  # onnxruntime has no bool Where
        shape = broadcast_shapes("where", condition.shape, a.shape, b.shape)
        return self._emit1(
            "Where", [condition, a, b], TensorDescriptor(dtype, shape), label="where"
        )
