"""godrun: declare a GodRun, let the cluster train it, let a fixed panel judge it."""

__version__ = "0.1.0"
