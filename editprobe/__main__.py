"""``python -m editprobe``: the same command as ``editprobe``."""

from editprobe.cli import main

main(prog_name="editprobe")
