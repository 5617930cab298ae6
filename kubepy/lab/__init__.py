"""The lab cluster: a whole kubepy cluster on one Linux host (``kubepy up``)."""

from pathlib import Path

# Here rather than in .cluster so that every `kubepy …` command can name them without importing the lab
# (pyroute2 and the rest): the CLI's parser is built by every daemon too.
DEFAULT_ROOT = Path("/var/lib/kubepy")
DEFAULT_NAME = "kubepy"
