import numpy as np
import pytest
import torch

from conftest import make_cross_encoder
from mamba_pyserini import MambaCrossEncoder, MambaRankerConfig
from mamba_pyserini.modeling import base
from mamba_pyserini.pooling import pool
from mamba_pyserini.templates import DOCUMENT_QUERY, QUERY_DOCUMENT

PAIRS = [
    ("how long do fleas live", "A flea can live up to a year, depending on its hosts. " * 6),
    ("q", "short"),
    ("define environment in anthropology", "Anthropology studies humans. " * 40),
]


def _tokenizer(family, neox_tokenizer, bert_tokenizer):
    return bert_tokenizer if family == "bert" else neox_tokenizer


@pytest.mark.parametrize("family", ["mamba", "mamba2", "gpt_neox", "bert"])
def test_scores_alone_equal_scores_in_a_padded_batch(family, neox_tokenizer, bert_tokenizer):
    model = make_cross_encoder(family, _tokenizer(family, neox_tokenizer, bert_tokenizer), max_length=96)
    batched = model.predict(PAIRS, batch_size=len(PAIRS))
    alone = np.array([model.predict([pair], batch_size=1)[0] for pair in PAIRS])  # batches of one
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(batched, 5))) == len(PAIRS)  # the scores depend on the input


@pytest.mark.parametrize("family", ["mamba", "mamba2", "gpt_neox", "bert"])
def test_save_and_load_round_trip(family, neox_tokenizer, bert_tokenizer, tmp_path):
    model = make_cross_encoder(family, _tokenizer(family, neox_tokenizer, bert_tokenizer), max_length=96)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = MambaCrossEncoder.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict(PAIRS), model.predict(PAIRS))


def test_defaults_follow_the_backbone(neox_tokenizer, bert_tokenizer):
    expected = MambaRankerConfig(template=DOCUMENT_QUERY, pooling="last")
    assert make_cross_encoder("mamba", neox_tokenizer).config == expected
    assert make_cross_encoder("bert", bert_tokenizer).config == MambaRankerConfig(
        template=QUERY_DOCUMENT, pooling="cls", max_length=128)  # the tiny BERT has 128 positions


def test_paper_template_truncates_only_the_document(neox_tokenizer):
    model = make_cross_encoder("mamba", neox_tokenizer, max_length=32)
    query = "what is the life cycle of a flea"
    [features] = model.tokenize([query], ["word " * 500])
    ids = features["input_ids"]
    assert len(ids) == 32
    text = neox_tokenizer.decode(ids)
    assert text.startswith("Document: word word")
    assert text.endswith(f"\n\nQuery: {query}<|endoftext|>")
    [short] = model.tokenize([query], ["tiny doc"])
    assert neox_tokenizer.decode(short["input_ids"]) == f"Document: tiny doc\n\nQuery: {query}<|endoftext|>"


def test_encoder_template_is_cls_query_sep_document(bert_tokenizer):
    model = make_cross_encoder("bert", bert_tokenizer, max_length=24)
    [features] = model.tokenize(["computer programs"], ["algorithm " * 100])
    assert len(features["input_ids"]) == 24
    assert features["input_ids"][0] == bert_tokenizer.cls_token_id
    assert features["token_type_ids"][:4] == [0, 0, 0, 0] and features["token_type_ids"][-1] == 1


@pytest.mark.parametrize("family", ["mamba", "bert"])
def test_query_too_long_for_max_length_is_refused(family, neox_tokenizer, bert_tokenizer):
    model = make_cross_encoder(family, _tokenizer(family, neox_tokenizer, bert_tokenizer), max_length=16)
    with pytest.raises(ValueError, match="leaves no room for the document"):
        model.predict([("computer " * 40, "doc")])


def test_max_length_beyond_the_models_positions_is_refused(bert_tokenizer):
    with pytest.raises(ValueError, match="exceeds the model's maximum of 128 positions"):
        make_cross_encoder("bert", bert_tokenizer, max_length=512)


def test_last_pooling_reads_the_last_real_token_under_either_padding():
    hidden = torch.arange(12.0).reshape(1, 4, 3).repeat(3, 1, 1)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert pool(hidden, right, "last").tolist() == [[6.0, 7.0, 8.0], [9.0, 10.0, 11.0], [0.0, 1.0, 2.0]]
    assert pool(hidden, right, "mean")[0].tolist() == [3.0, 4.0, 5.0]
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    assert pool(hidden, left, "last").tolist() == [[9.0, 10.0, 11.0]] * 3


@pytest.mark.parametrize("family", ["mamba", "bert"])
def test_predict_tokenizing_in_chunks_scores_each_pair_in_place(family, neox_tokenizer, bert_tokenizer,
                                                                 monkeypatch):
    model = make_cross_encoder(family, _tokenizer(family, neox_tokenizer, bert_tokenizer))
    pairs = PAIRS * 3 + [(q, d + " more words") for q, d in PAIRS]
    whole = model.predict(pairs, batch_size=4)
    monkeypatch.setattr(base, "TOKENIZE_CHUNK", 3)  # the next chunk is tokenized while this one runs
    assert np.allclose(model.predict(pairs, batch_size=2), whole, atol=1e-5)
    assert np.allclose(model.predict(pairs[5:] + pairs[:5], batch_size=2), np.roll(whole, -5), atol=1e-5)
    with pytest.raises(ValueError, match="leaves no room for the document"):  # raised in the tokenizing thread
        model.predict(pairs[:4] + [("computer " * 1000, "doc")], batch_size=2)


def test_rank_orders_documents_by_score(neox_tokenizer):
    model = make_cross_encoder("mamba", neox_tokenizer)
    docs = [d for _, d in PAIRS]
    ranked = model.rank("fleas", docs, return_documents=True)
    scores = model.predict([("fleas", d) for d in docs])
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores, kind="stable"))
    assert ranked[0]["text"] == docs[ranked[0]["corpus_id"]]


@pytest.mark.parametrize("make_dir, problem", [
    (lambda p: p, "is not a model checkpoint"),
    (lambda p: (p / "config.json").write_text('{"model_type": "mamba"}') and p, "model.safetensors"),
])
def test_a_directory_that_is_not_a_checkpoint_is_refused(tmp_path, make_dir, problem):
    with pytest.raises(ValueError, match=problem):
        MambaCrossEncoder.from_pretrained(make_dir(tmp_path))


def test_a_checkpoint_of_the_wrong_kind_is_refused(tiny_checkpoints, tmp_path):
    import json
    import shutil

    ckpt = tmp_path / "bi"
    shutil.copytree(tiny_checkpoints["mamba"], ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["mamba_pyserini"]["kind"] = "bi-encoder"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="is a bi-encoder checkpoint, not a cross-encoder"):
        MambaCrossEncoder.from_pretrained(ckpt)
    config["mamba_pyserini"]["kind"] = "cross-encoder"
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="has no model.safetensors"):
        MambaCrossEncoder.from_pretrained(ckpt)


def test_a_plain_backbone_loads_with_a_fresh_head(neox_tokenizer, tmp_path):
    from transformers import AutoModel

    from conftest import tiny_backbone_config

    AutoModel.from_config(tiny_backbone_config("mamba", len(neox_tokenizer))).save_pretrained(tmp_path)
    neox_tokenizer.save_pretrained(tmp_path)
    model = MambaCrossEncoder.from_pretrained(tmp_path, max_length=64)
    assert model.config.max_length == 64 and model.config.pooling == "last"
    assert model.predict(PAIRS[:1]).shape == (1,)


def test_pair_pooling_scores_the_cosine_of_the_query_and_document_segments(bert_tokenizer, tmp_path):
    model = make_cross_encoder("bert", bert_tokenizer, max_length=96, pooling="pair")
    assert model.head is None
    scores = model.predict(PAIRS)
    model.save_pretrained(tmp_path / "pair")
    np.testing.assert_allclose(MambaCrossEncoder.from_pretrained(tmp_path / "pair").predict(PAIRS), scores, rtol=1e-6)
    for (query, doc), score in zip(PAIRS, scores):
        batch = model.collate(model.tokenize([query], [doc]))
        types = batch["token_type_ids"][0]
        assert types[0] == 0 and types[-1] == 1  # [CLS] query [SEP] | document [SEP]
        with torch.no_grad():
            hidden = model.hidden(**batch)[0]
        q, d = hidden[types == 0].mean(0), hidden[types == 1].mean(0)
        assert score == pytest.approx(torch.nn.functional.cosine_similarity(q, d, dim=0).item(), abs=1e-5)


@pytest.mark.parametrize("overrides", [{"kind": "bi-encoder"}, {"template": DOCUMENT_QUERY}])
def test_pair_pooling_is_only_for_query_document_cross_encoders(overrides):
    with pytest.raises(ValueError, match="'pair' pooling is for cross-encoders"):
        MambaRankerConfig(pooling="pair", **{"template": QUERY_DOCUMENT, **overrides})
