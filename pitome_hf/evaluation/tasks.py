"""The tasks `pitome-hf evaluate` runs: one class per task, all driven by the same sweep in pitome_hf.evaluation.evaluate.

A task loads the model (merging off) and what it needs beside it, prepares this process's shard of the data, runs one
merge configuration over it (timing the model forward only, after warm-up, with device synchronisation) and turns
the gathered per-sample outputs into metrics through the shipped `evaluate` modules.

| task                            | models        | columns (defaults)                   | metrics                         |
|---------------------------------|---------------|--------------------------------------|---------------------------------|
| image-classification            | ViT, DeiT     | image, label                         | accuracy                        |
| zero-shot-image-classification  | CLIP          | image, label (a ClassLabel: names)   | accuracy                        |
| image-text-retrieval            | CLIP          | image, caption (a string or a list)  | recall@1/5/10 both ways, mean   |
| vqa                             | VLM families  | image, question, answers (list/str)  | VQA soft accuracy               |

The code lives by concern: `tasks_base.py` (the shared machinery, loading and the Task base class),
`tasks_classification.py` (image classification and its labels), `tasks_clip.py` (zero-shot
classification and image-text retrieval) and `tasks_vqa.py` (VQA); this module re-exports their names.
"""

from __future__ import annotations

from pitome_hf.evaluation.tasks_base import (  # noqa: F401  (re-exported)
    CACHE_LIMIT_BYTES, DEFAULT_PROMPTS, RECALL_KS, TASK_MODELS, Batches, Task, _image_size, _progress, _rgb,
    check_model_type, check_prompt, image_sizes, load_checked, model_type_of, read_images, task_model_class,
    timed_run,
)
from pitome_hf.evaluation.tasks_classification import (  # noqa: F401  (re-exported)
    ImageClassification, check_label_range, label_mapping, load_classifier, read_labels,
)
from pitome_hf.evaluation.tasks_clip import ImageTextRetrieval, ZeroShotClassification, _ClipTask  # noqa: F401
from pitome_hf.evaluation.tasks_vqa import VisualQuestionAnswering, vqa_answers  # noqa: F401

TASK_CLASSES = {cls.name: cls for cls in (ImageClassification, ZeroShotClassification, ImageTextRetrieval,
                                          VisualQuestionAnswering)}
TASKS = tuple(TASK_CLASSES)
