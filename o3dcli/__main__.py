"""`python -m o3dcli ...`: the same as the `o3d` command."""

from o3dcli.cli import main

main()
