"""No bad input accepted by the models and their configs (issue 23): closed-set fields on every path, unknown
keywords, one rule for a preset next to explicit fields, empty batches, missing inputs, all-padding rows."""

import json

import pytest
import torch
from transformers import BertConfig, BertModel, Dinov2Config, Dinov2Model, ViTConfig, ViTForImageClassification

from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification, apply_pitome
from pitome_hf.modeling import PiToMeBertModel, PiToMeCLIPConfig, PiToMeCLIPModel
from pitome_hf.modeling.merge_config import MERGE_FIELD_TABLE, MergeSettings, resolve_update

VIT = dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=4)
BERT = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=50,
            max_position_embeddings=32)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit")
    ViTForImageClassification(ViTConfig(**VIT)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    BertModel(BertConfig(**BERT)).save_pretrained(path)
    return path


def test_classifier_pooling_is_checked_on_every_path(vit_dir, tmp_path):
    message = "classifier_pooling='max' is not supported; allowed values: 'cls', 'mean'"
    with pytest.raises(ValueError, match=message):  # from_pretrained keyword
        PiToMeViTForImageClassification.from_pretrained(vit_dir, classifier_pooling="max")
    with pytest.raises(ValueError, match=message):  # constructor
        PiToMeViTConfig(**VIT, classifier_pooling="max")
    model = PiToMeViTForImageClassification.from_pretrained(vit_dir)
    with pytest.raises(ValueError, match=message):  # attribute assignment before a forward
        model.config.classifier_pooling = "max"
    assert model.config.classifier_pooling == "cls"
    with pytest.raises(ValueError, match=message):  # apply_pitome
        apply_pitome(ViTForImageClassification(ViTConfig(**VIT)), classifier_pooling="max")
    model.save_pretrained(tmp_path)  # what is saved loads again: nothing invalid could be written
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "classifier_pooling": "max"}))
    with pytest.raises(ValueError, match=message):  # config.json
        PiToMeViTForImageClassification.from_pretrained(tmp_path)


def test_bert_pooling_is_checked_on_every_path(bert_dir):
    with pytest.raises(ValueError, match="pooling='max' is not supported"):
        PiToMeBertModel.from_pretrained(bert_dir, pooling="max")
    model = PiToMeBertModel.from_pretrained(bert_dir)
    with pytest.raises(ValueError, match="pooling='max' is not supported"):
        model.config.pooling = "max"
    with pytest.raises(TypeError, match="classifier_pooling"):  # not a BERT setting: refused as the stock model does
        PiToMeBertModel.from_pretrained(bert_dir, classifier_pooling="max")


@pytest.mark.parametrize("typo, closest", [("keep_rato", "keep_ratio"), ("margn", "margin"), ("presett", "preset")])
def test_unknown_keywords_are_refused_with_the_closest_name(typo, closest):
    with pytest.raises(TypeError, match=f"unknown setting '{typo}'. Did you mean '{closest}'"):
        apply_pitome(ViTForImageClassification(ViTConfig(**VIT)), **{typo: 0.5})
    with pytest.raises(TypeError, match=f"unknown setting '{typo}'"):
        resolve_update({}, {typo: 0.5}, 4)


def preset_paths(vit_dir, first, second):
    """The same two settings through every path, in both orders."""
    kwargs = dict([first, second])
    reverse = dict([second, first])
    return {
        "constructor": lambda: PiToMeViTConfig(**VIT, **kwargs),
        "constructor reversed": lambda: PiToMeViTConfig(**VIT, **reverse),
        "from_pretrained": lambda: PiToMeViTForImageClassification.from_pretrained(vit_dir, **kwargs).config,
        "from_pretrained reversed": lambda: PiToMeViTForImageClassification.from_pretrained(vit_dir, **reverse).config,
        "apply_pitome": lambda: apply_pitome(ViTForImageClassification(ViTConfig(**VIT)), **kwargs).config,
    }


@pytest.mark.parametrize("margin", [0.5, 0.9])  # 0.9 is the default: given explicitly, it still conflicts
def test_a_preset_next_to_a_disagreeing_field_is_refused_on_every_path(vit_dir, margin):
    for path, build in preset_paths(vit_dir, ("margin", margin), ("merge_preset", "authors-deit")).items():
        with pytest.raises(ValueError, match=f"sets margin=0.75, but margin={margin} was given too"):
            build()
            pytest.fail(path)


def test_a_preset_next_to_an_agreeing_field_is_the_same_on_every_path(vit_dir):
    results = set()
    for path, build in preset_paths(vit_dir, ("margin", 0.75), ("merge_preset", "authors-deit")).items():
        config = build()
        results.add((config.merge_preset, config.margin, tuple(config.merge_method), config.energy))
    assert results == {("authors-deit", 0.75, ("pitome_bsm",) * 2 + ("pitome",) * 2, "elu")}


def test_a_field_set_after_a_preset_clears_its_name():
    config = PiToMeViTConfig(**VIT, merge_preset="authors-deit")
    config.margin = 0.5
    assert (config.merge_preset, config.margin, config.energy) == (None, 0.5, "elu")
    assert MergeSettings.from_config(config).margin_at(0) == 0.5


def test_settings_are_rebuilt_only_for_merge_fields_and_layer_counts():
    config = PiToMeViTConfig(**VIT, keep_ratio=0.8)
    first = config.merge_settings()
    config.id2label = {0: "a", 1: "b"}
    config.output_attentions = False
    assert config.merge_settings() is first
    config.keep_ratio = 0.7
    assert config.merge_settings() is not first and config.merge_settings().number("keep_ratio") == 0.7


def test_every_table_field_is_a_config_field_with_its_default():
    config = PiToMeViTConfig(**VIT)
    for field in MERGE_FIELD_TABLE:
        assert getattr(config, field.name) == field.default, field.name
        assert field.help
        assert field.validate(field.default, 4) == field.default


@pytest.mark.parametrize("kind", ["vit", "dinov2", "bert"])
def test_an_empty_batch_is_refused_at_the_entrance(kind, vit_dir, bert_dir):
    if kind == "vit":
        model, inputs = PiToMeViTForImageClassification.from_pretrained(vit_dir), {"pixel_values": torch.zeros(0, 3, 32, 32)}
    elif kind == "dinov2":
        model = apply_pitome(Dinov2Model(Dinov2Config(**VIT)))
        inputs = {"pixel_values": torch.zeros(0, 3, 32, 32)}
    else:
        model, inputs = PiToMeBertModel.from_pretrained(bert_dir), {"input_ids": torch.zeros(0, 8, dtype=torch.long)}
    name = next(iter(inputs))
    with pytest.raises(ValueError, match=f"{name} has batch size 0 .* at least one sample"):
        model(**inputs)


def test_clip_without_pixel_values_names_the_missing_input():
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=50,
                max_position_embeddings=32)
    config = PiToMeCLIPConfig(text_config=text, vision_config={**VIT, "num_hidden_layers": 2})
    model = PiToMeCLIPModel(config).eval()
    with pytest.raises(ValueError, match="PiToMeCLIPModel.forward needs pixel_values, got None"):
        model(input_ids=torch.randint(1, 50, (2, 8)))


def test_bert_mean_pooling_of_an_all_padding_row_is_zeros_as_sentence_transformers(bert_dir):
    model = PiToMeBertModel.from_pretrained(bert_dir, pooling="mean").eval()
    ids = torch.randint(5, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1] = 0
    with torch.no_grad():
        pooled = model(input_ids=ids, attention_mask=mask).pooler_output
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled[1], torch.zeros_like(pooled[1]))
    assert pooled[0].abs().sum() > 0


def test_apply_pitome_on_a_stock_bert_keeps_the_text_default_layers():
    """A stock config has no merge fields: the class defaults apply (BERT merges in its first 3 layers), whatever
    other setting is given."""
    stock = BertModel(BertConfig(**{**BERT, "num_hidden_layers": 6}))
    assert apply_pitome(stock, keep_ratio=0.7).config.merge_layers == [0, 1, 2]
    assert apply_pitome(stock).config.merge_layers == [0, 1, 2]
