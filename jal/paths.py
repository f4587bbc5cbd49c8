"""Where the checkout's parts are: the repository's root and its Hydra configs (jal is installed editable, so the
package's folder is the checkout's)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
