# The config schemas join Hydra's ConfigStore on import: every config file names one (jal/config.py); the
# resolvers the config files call join OmegaConf (jal/resolvers.py).
from jal import config as _config  # noqa: F401
from jal import resolvers as _resolvers  # noqa: F401
