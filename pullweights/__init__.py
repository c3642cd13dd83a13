"""pullweights: neural-network weights pulled on demand, run on onnxruntime."""
