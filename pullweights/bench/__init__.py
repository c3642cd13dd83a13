"""``pullweights bench``: scenarios side by side on one model, fresh processes, medians.

:mod:`~pullweights.bench.scenarios` says what each scenario runs,
:mod:`~pullweights.bench.runner` runs them interleaved and
:mod:`~pullweights.bench.report` writes the JSON, the markdown table and the plot.
"""
