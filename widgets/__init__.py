"""Shopfloor's notebook panels (ipywidgets), imported as ``shopfloor.widgets``.

Each panel is a thin view over a plain object usable from code (see each module).
"""

from shopfloor.widgets.apps_publish import PublishPanel
from shopfloor.widgets.compute import ComputePanel
from shopfloor.widgets.finetune_wizard import FineTuneWizard
from shopfloor.widgets.ray_panel import RayClusterPanel
from shopfloor.widgets.workshops_checkpoints import check, checkpoint
from shopfloor.widgets.workshops_trainer import TrainerPanel

__all__ = ["ComputePanel", "FineTuneWizard", "PublishPanel", "RayClusterPanel", "TrainerPanel",
           "check", "checkpoint"]
