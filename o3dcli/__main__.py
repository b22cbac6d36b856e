"""`python -m o3dcli ...`: the same as the `o3d` command (o3d generate --jobs starts its workers so)."""

from o3dcli.cli import main

main()
