"""Tokenizer training, its HF round trip, and seeded sampling."""

from transformers import AutoTokenizer

from alignctl.data.tasks import review_grammar, tiny_lm


def test_tokenizer_round_trip(tmp_path):
    texts = review_grammar.generate_reviews(0, 300)
    tok = tiny_lm.train_bpe_tokenizer(texts, vocab_size=600, model_max_length=64)
    assert len(tok) <= 600
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == (tiny_lm.BOS, tiny_lm.EOS, tiny_lm.PAD)
    assert len({loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id}) == 3
    assert loaded.model_max_length == 64
    for text in texts[:20] + ["Unseen words: zyzzyva, café, 42!", "  two spaces"]:
        ids = loaded(text)["input_ids"]
        assert ids[0] == loaded.bos_token_id  # BOS is prepended, nothing appended
        assert loaded.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless
        assert ids == tok(text)["input_ids"]
    # a prompt ending on a word is a token prefix of prompt + " continuation"
    prompt, cont = "The plot was slow", " but the acting was wonderful."
    p_ids, f_ids = loaded(prompt)["input_ids"], loaded(prompt + cont)["input_ids"]
    assert f_ids[: len(p_ids)] == p_ids
