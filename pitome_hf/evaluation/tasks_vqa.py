"""Visual question answering with the registry's vision-language families (LLaVA-1.5, Qwen2.5-VL, ...)."""

from __future__ import annotations

from pitome_hf.evaluation.tasks_base import (Batches, Task, check_model_type, check_prompt, image_sizes,
                                             load_checked, read_images, task_model_class)


class VisualQuestionAnswering(Task):
    """VQA with a vision-language family of the registry (LLaVA-1.5, Qwen2.5-VL, ...: a family serving "vqa" with a
    PiToMe processor): greedy generation of a short answer to `prompt` (the family's `vqa_prompt`, else LLaVA-1.5's
    VQAv2 prompt; the processor's image token marks the image, `{}` the question), scored with the shipped VQA soft
    accuracy. The prompt is built by the family's PiToMe processor made from each configuration's settings, so it
    holds exactly that configuration's number of image tokens. Timing covers `generate` (prefill and decoding);
    GFLOPs are the family's analytic prefill FLOPs per question (its processor outputs that the FLOPs function takes,
    e.g. Qwen2.5-VL's image_grid_thw), averaged over the questions run."""

    name = "vqa"
    columns = {"image": "image", "text": "question", "label": "answers"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from pitome_hf.checkpoints import processor_parts
        from pitome_hf.families import family_of

        config_dict = check_model_type(self.model_path, self.name)
        self.family = family_of(str(config_dict["model_type"]))
        self.parts = processor_parts(self.family.processor, self.model_path)
        if self.parts is None:
            raise ValueError(f"{self.model_path} has no tokenizer or image processor: the vqa task builds the "
                             f"{self.family.name} processor from them.")
        if not kwargs.get("prompt") and self.family.vqa_prompt:
            self.prompt = self.family.vqa_prompt
        self.base = self.place(load_checked(task_model_class(config_dict), self.model_path, **self.load_options()))
        self.tokenizer = self.parts["tokenizer"]
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.image_token = self.family.processor.from_model_config(self.base.config, **self.parts).image_token
        check_prompt(self.prompt, self.name, needs=(self.image_token,))
        self.answers = vqa_answers(self.ds[self.col["label"]][: self.n], self.col["label"])
        questions = list(self.ds[self.col["text"]][: self.n])
        for i, question in enumerate(questions):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"row {i} of the question column {self.col['text']!r} holds {question!r}: each row "
                                 "needs a question (a non-empty string).")
        self.processor = None
        self.per_question: dict = {}  # id(net) -> {sample index: (prefill FLOPs, image tokens)}

    def batches(self, shard):
        def make(idx):  # raw inputs: the prompt's image-token count depends on the configuration
            questions = self.ds.select_columns([self.col["text"]])[idx][self.col["text"]]
            return {"images": read_images(self.ds, self.col["image"], idx), "questions": questions, "index": idx}

        size = getattr(self.base.config.vision_config, "image_size", None)
        self.image_size = size if isinstance(size, int) or size is None else size[0]
        return Batches(shard, self.batch_size, make, cache=False)

    def forward(self, net):
        import inspect

        processor = self.family.processor.from_model_config(net.config, **self.parts)
        token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        takes = [k for k in inspect.signature(self.family.flops).parameters if k != "config"]
        record = self.per_question.setdefault(id(net), {})

        def run(inputs):
            enc = processor(images=inputs["images"], text=[self.prompt.format(q) for q in inputs["questions"]],
                            return_tensors="pt", padding=True)
            image = (enc["input_ids"] == token_id) & enc["attention_mask"].bool()
            for i, index in enumerate(inputs["index"]):  # one image per question: row i of each per-image output
                n = int(image[i].sum())
                kwargs = {k: enc[k][i : i + 1].tolist() for k in takes if k in enc}
                text = int(enc["attention_mask"][i].sum()) - n
                record[index] = (self.family.flops(net.config, text, **kwargs), n)
            enc = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                   for k, v in enc.items()}
            out = net.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                               pad_token_id=self.tokenizer.pad_token_id)
            return [a.strip() for a in self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                                   skip_special_tokens=True)]

        return run

    def check_rows(self, nets) -> None:
        """A visual-token budget that some question's image cannot meet (more tokens than the image has) is refused
        before the sweep, naming the row and the image's size: each row's processor counts the tokens of every image
        size in the data (`_get_num_multimodal_tokens`, from the sizes alone)."""
        budgeted = [net for net in nets if getattr(net.config, "visual_tokens", None) is not None]
        if not budgeted:
            return
        column = self.col["image"]
        sizes = image_sizes(self.ds, column, self.n)
        for net in budgeted:
            processor = self.family.processor.from_model_config(net.config, **self.parts)
            for (height, width), row in sizes.items():
                try:
                    processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
                except ValueError as error:
                    raise ValueError(f"row {row} of the image column {column!r} ({width} x {height} px): "
                                     f"{error}") from None

    def score(self, outputs):
        from pitome_hf.evaluation.metrics import load_metric

        keys = sorted(outputs)
        return load_metric("vqa_accuracy").compute(predictions=[outputs[i] for i in keys],
                                                   references=[self.answers[i] for i in keys])

    def _mean(self, net, column: int) -> float:
        values = [v[column] for v in self.per_question.get(id(net), {}).values()]
        return sum(values) / len(values) if values else float("nan")

    def gflops(self, net):
        return self._mean(net, 0) / 1e9

    def token_counts(self, net):
        """A family whose vision tower merges (the registry's `vision_merge_settings`, LLaVA-1.5): the tower's tokens
        per layer; families that reduce at the language model's input: the mean number of image tokens per question
        reaching it."""
        # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
        from pitome_hf.modeling import token_schedule

        tower = self.family.vision_merge_settings
        if tower is None:
            return [round(self._mean(net, 1))]
        vision = net.config.vision_config
        patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        return token_schedule(tower(net.config), num_tokens=(self.image_size // patch) ** 2)


def vqa_answers(rows, column: str) -> list[list[str]]:
    """Each row's reference answers as a list of strings; a row without any (None, [], a number) is refused."""
    answers = []
    for i, row in enumerate(rows):
        row = [row] if isinstance(row, str) else row
        if not isinstance(row, (list, tuple)) or not row or not all(isinstance(a, str) for a in row):
            raise ValueError(f"row {i} of the answers column {column!r} holds {row!r}: each row needs an answer string "
                             "or a non-empty list of them.")
        answers.append(list(row))
    return answers

