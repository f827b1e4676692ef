# Shopfloor's JupyterHub configuration: load the site file and install Shopfloor.
# The site file is $SHOPFLOOR_SITE, else demo_site.yaml beside this file.
# Every setting and its meaning: shopfloor.site (the typed model of the site file).
import os
from pathlib import Path

from shopfloor.extensions.install import install

c = get_config()  # noqa: F821
install(c, os.environ.get("SHOPFLOOR_SITE") or Path(__file__).with_name("demo_site.yaml"))
