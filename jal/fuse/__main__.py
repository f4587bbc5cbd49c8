"""python -m jal.fuse: the command (jal.fuse.command), its stop signals and Ctrl-C handled to its end."""

from jal.fuse.command import main
from jal.stops import command

command(main)
