# A command (python -m jal.train, jal-fuse, ...) handles its stop signals and Ctrl-C from here, its first line,
# before Hydra and torch load (jal/stops.py); a library's use (tests, notebooks, workers) keeps its own.
import sys as _sys

from jal import stops as _stops

if _stops.started_as_command(_sys.orig_argv):
    _stops.handle_command_signals()

# The config schemas join Hydra's ConfigStore on import: every config file names one (jal/config.py); the
# resolvers the config files call join OmegaConf (jal/resolvers.py).
from jal import config as _config  # noqa: E402, F401
from jal import resolvers as _resolvers  # noqa: E402, F401
