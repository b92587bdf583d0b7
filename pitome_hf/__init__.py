"""pitome_hf: PiToMe token merging for Hugging Face transformers.

Importing the package registers the PiToMe classes with the transformers Auto factories, so that
`AutoModel.from_pretrained(folder)` works without remote code when pitome_hf is installed.
"""

from pitome_hf import modeling
from pitome_hf.modeling import *  # noqa: F403 (the model classes; their list is modeling.__all__)
from pitome_hf.apply import apply_pitome
from pitome_hf.families import register_auto_classes

register_auto_classes()

__version__ = "0.2.0"

__all__ = [*modeling.__all__, "apply_pitome"]
