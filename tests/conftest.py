"""Test-wide settings."""

import os

# BLAS worker threads fight onnxruntime's on 2 cores and make small numpy matmuls ~50x
# slower; one thread keeps references fast and their summation order fixed.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
