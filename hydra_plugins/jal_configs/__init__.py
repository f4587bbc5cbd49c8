"""Makes the project's schemas and resolvers (jal/config.py, jal/own_data.py, jal/resolvers.py) known to Hydra wherever Hydra
starts, so that a notebook composing `train` with Hydra's compose API needs no `import jal` first. Hydra imports
every module under the hydra_plugins namespace when it builds its config search path; importing jal.config
registers the schemas in the ConfigStore, jal.resolvers the `jal.*` resolvers. Both need Hydra and OmegaConf
only (no torch)."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

import jal.config  # noqa: F401  (the registration is the point)
import jal.experiment  # noqa: F401
import jal.own_data  # noqa: F401  (the schemas of dataset=folder and arrays, their resolvers)
import jal.resolvers  # noqa: F401
import jal.tune  # noqa: F401  (the search's folder resolvers)


class JalConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        pass  # the search path is the caller's; only the import above matters
