"""`python -m orchestra.cli` is the `orchestra` command."""

from orchestra.cli import main

main()
