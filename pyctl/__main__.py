"""`python -m pyctl`: the same as the `pyctl` console script."""

from pyctl.cli import entry

entry()
