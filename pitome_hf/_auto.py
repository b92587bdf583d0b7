"""Registration of the PiToMe classes with the transformers Auto factories (local, no remote code needed): the
family registry (pitome_hf.families) owns the list."""

from .families import register_auto_classes

__all__ = ["register_auto_classes"]
