"""The built-in text task's parts, offline: the labelled sentences, the tokenizer, the packaged MiniLM weights."""

from __future__ import annotations

import numpy as np
import torch
from tiny import tiny_config

from harness.build import data as D
from harness.build import samples as S
from harness.build.text import TOPICS, corpus_sentences, minilm_classifier, tokenize
from harness.config.run import RunConfig


def test_sentences_are_distinct_per_topic_and_tokenized_to_int64():
    by = corpus_sentences()
    assert list(by) == list(TOPICS) and all(len(v) >= 100 for v in by.values())
    seen = [s.lower() for v in by.values() for s in v]
    assert len(seen) == len(set(seen))  # a sentence under two topics is dropped
    enc = tokenize(["What is AI?", "Tell me a joke about computers, please."], max_length=8)
    assert enc["input_ids"].dtype == np.int64 and enc["input_ids"].shape == (2, 8)
    assert enc["attention_mask"][0].sum() < 8 == enc["attention_mask"][1].sum()  # padded, cut at max_length
    assert enc["input_ids"][0, 0] == 101  # [CLS]


def test_the_text_task_loads_as_named_inputs_with_a_median_timed_sample():
    cfg = RunConfig.from_dict(tiny_config(data={"source": "text", "per_class": 20, "max_length": 24}))
    data = D.load(cfg.data)
    assert list(data.x_train) == ["input_ids", "attention_mask"] and data.classes == list(TOPICS)
    assert len(data.y_test) == 15 and set(data.y_test) == set(range(5))
    one, info = S.timing_sample(data.x_test, "median")
    lens = S.lengths(data.x_test)
    assert info["seq_len"] == int(np.sort(lens)[(len(lens) - 1) // 2])
    assert one["input_ids"].shape == (1, info["seq_len"])
    assert info["padded_len"] == data.x_test["input_ids"].shape[1] <= 24


def test_minilm_loads_the_packaged_weights_and_masks_padding():
    model = minilm_classifier(5).eval()
    enc = tokenize(["the cat sat on the mat"], max_length=32)
    ids, mask = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
    padded_ids, padded_mask = (torch.nn.functional.pad(t, (0, 7)) for t in (ids, mask))
    with torch.no_grad():
        a, b = model.features(ids, mask), model.features(padded_ids, padded_mask)
        assert model(ids, mask).shape == (1, 5)
    assert torch.allclose(a, b, atol=1e-5)  # padding is masked out: the same sentence embedding
    assert a.abs().max() > 0.01  # pretrained, not zeros


def test_the_text_demo_configs_load_and_name_the_metric():
    from harness.api import demo_config

    for quick in (False, True):
        cfg = demo_config(quick=quick, task="text")
        assert cfg.model.builtin == "minilm_l6" and cfg.data.source == "text" and cfg.report.metric == "macro_f1"
        assert {(v.precision, f) for v in cfg.variants for f in v.formats} == {
            ("fp32", "onnx"), ("fp32", "tflite"), ("int8-dynamic", "onnx"), ("int8-dynamic", "tflite")}
