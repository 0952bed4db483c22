"""The benchmark's own errors."""

from invlearn_ray.errors import UserError


class BenchmarkConfigError(ValueError, UserError):
    """A profile, dataset or configs-file option is invalid; the message says where."""


class BenchmarkInterrupted(RuntimeError):
    """A tuning study was interrupted (Ctrl-C); running the benchmark again resumes it."""
