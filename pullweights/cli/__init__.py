"""The ``pullweights`` command line."""
