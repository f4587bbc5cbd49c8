# The config schemas join Hydra's ConfigStore on import: every config file names one (jal/config.py).
from jal import config as _config  # noqa: F401
