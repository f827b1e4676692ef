"""Shopfloor: the self-service workbench of an AI Factory."""

__version__ = "0.1.0"
