"""The tag-similarity encoder loads safetensors weights only (a pickled ``pytorch_model.bin`` is refused)."""
import pytest

from tests.hf_tiny import tiny_vocab


def test_sentence_encoder_refuses_pickled_weights(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from pipelines.teachers.tag_similarity import SentenceEncoder

    vocab = tiny_vocab()
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    import torch

    model = BertModel(cfg)
    model.save_pretrained(tmp_path / "bin")
    (tmp_path / "bin/model.safetensors").unlink()  # the same weights as a pickle, which transformers can still load
    torch.save(model.state_dict(), tmp_path / "bin/pytorch_model.bin")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(tmp_path / "bin")
    assert (tmp_path / "bin/pytorch_model.bin").exists() and not (tmp_path / "bin/model.safetensors").exists()
    with pytest.raises(OSError, match="safetensors"):
        SentenceEncoder(str(tmp_path / "bin"))
    BertModel(cfg).save_pretrained(tmp_path / "safe")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(tmp_path / "safe")
    assert SentenceEncoder(str(tmp_path / "safe")).encode(["a red circle"]).shape == (1, 8)
