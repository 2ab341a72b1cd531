"""fastnn's benchmark suite behind `python -m fastnn bench`: fastnn beside NumPy, PyTorch and
scikit-learn in one run, interleaved, as medians and ratios. benchmarks/ holds the
pytest-benchmark twins of the same workloads."""
