"""`python -m skyfleet` runs the CLI."""

from skyfleet.cli import main

main()
