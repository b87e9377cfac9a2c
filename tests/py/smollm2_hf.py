"""SmolLM2's tokenizer rebuilt with Hugging Face `tokenizers` from the GGUF's vocabulary and
merges: byte-level BPE with SmolLM2's pre-tokenizer (single digits, then the GPT-2 regex) and
its special tokens. The oracle of the tokenizer tests (tests/py/test_tokenizer_hf.py) and of
bench/tokenizer_bench.py."""


def hf_tokenizer(gguf_path):
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    r = gguf.GGUFReader(str(gguf_path))

    def strs(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens, merges = strs("tokenizer.ggml.tokens"), strs("tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok
