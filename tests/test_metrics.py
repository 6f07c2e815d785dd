"""Editing metrics on tiny hand-built models: every expected number is derived by hand in the comments."""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)
from transformers.modeling_outputs import CausalLMOutput

from editprobe.benchmark.metrics import (PROTOCOLS, adoption_rates, edit_accuracy, locality_agreement, mentions,
                                         ngram_entropy, target_token_ids, teacher_forced_argmax, token_accuracy)

torch.set_num_threads(2)

VOCAB = {"[PAD]": 0, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "x": 7, "[BOS]": 8, "[UNK]": 9}
V = len(VOCAB)
A, B, C, D, E, F, X, BOS = (VOCAB[w] for w in ["a", "b", "c", "d", "e", "f", "x", "[BOS]"])


def make_tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over VOCAB; with ``bos`` it prepends [BOS] like LLaMA's."""
    core = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        core.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   padding_side="left")


def succ_llama() -> LlamaForCausalLM:
    """A real 1-layer LLaMA whose next-token argmax is succ(t) = (t + 1) mod V for the current token t.

    Embeddings are one-hot in the first V of 16 dims; o_proj and down_proj are zero, so the layer adds nothing;
    the final RMSNorm scales the one-hot by 4; lm_head row j reads dim (j - 1) mod V, so logit j = 4 iff j = t + 1.
    """
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :V] = torch.eye(V)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for j in range(V):
            model.lm_head.weight[j, (j - 1) % V] = 1.0
    return model


class PositionShift(torch.nn.Module):
    """argmax at position i = (token_i + position_id_i) mod V: wrong position ids under padding change the answer."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, input_ids, attention_mask, position_ids):
        return CausalLMOutput(logits=torch.nn.functional.one_hot((input_ids + position_ids) % V, V).float())


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(bos=False)


@pytest.fixture(scope="module")
def tok_bos():
    return make_tokenizer(bos=True)


# --- target_token_ids -------------------------------------------------------------------------------------------

def test_target_ids_without_bos(tok):
    # "a b" -> [a, b]; " c d" -> [c, d]; the target's surrounding spaces are stripped first.
    assert target_token_ids(tok, "a b", "  c d ") == ([A, B], [C, D])


def test_target_ids_keep_bos_with_prompt(tok_bos):
    # A LLaMA-style tokenizer adds [BOS] once, in front; it belongs to the prompt, never to the target.
    assert target_token_ids(tok_bos, "a b", "c d") == ([BOS, A, B], [C, D])


# --- teacher_forced_argmax / token_accuracy / edit_accuracy ----------------------------------------------------

def test_argmax_succ_model(tok):
    # "a b" + "c d": positions predicting c and d read b and c -> succ(b)=c, succ(c)=d.
    # "c" + "d e f": they read c, d, e -> d, e, f.
    assert teacher_forced_argmax(succ_llama(), tok, ["a b", "c"], ["c d", "d e f"]) == [[C, D], [D, E, F]]


def test_argmax_with_bos(tok_bos):
    # [BOS] a b c x: positions predicting c and x read b and c -> [c, d]; the BOS shifts nothing.
    assert teacher_forced_argmax(succ_llama(), tok_bos, ["a b"], ["c x"]) == [[C, D]]


def test_position_ids_follow_left_padding(tok):
    # argmax = token + position, positions counted from each sequence's first real token:
    #   "a b" + "c d"  = [1,2,3,4]:   pos 1 reads b(2)+1=3, pos 2 reads c(3)+2=5 -> [3, 5]
    #   "c"   + "a"    = [3,1]:       pos 0 reads c(3)+0=3                       -> [3]
    #   "a b c d" + "e" = [1,2,3,4,5]: pos 3 reads d(4)+3=7                       -> [7]
    prompts, targets = ["a b", "c", "a b c d"], ["c d", "a", "e"]
    expected = [[3, 5], [3], [7]]
    model = PositionShift()
    assert teacher_forced_argmax(model, tok, prompts, targets, batch_size=16) == expected
    assert teacher_forced_argmax(model, tok, prompts, targets, batch_size=1) == expected


def random_model(family: str):
    """A randomly initialised 2-layer model: LLaMA (rotary positions) or GPT-2 (absolute positions)."""
    torch.manual_seed(1)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                            pad_token_id=0)).eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=None, eos_token_id=None)).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_equals_unbatched_with_real_attention(tok_bos, family):
    # Checked by breaking the code on purpose: with the mask dropped LLaMA's predictions change (pads leak into
    # attention); with position ids that count the padding GPT-2's change (RoPE is shift-invariant, so LLaMA's don't).
    model = random_model(family)
    prompts = ["a", "a b c d e f", "b c", "f e d", "c"]
    targets = ["b c d e", "x", "d e", "c b a", "a b c d e f x"]
    one_by_one = [teacher_forced_argmax(model, tok_bos, [p], [t])[0] for p, t in zip(prompts, targets)]
    assert teacher_forced_argmax(model, tok_bos, prompts, targets, batch_size=16) == one_by_one
    assert teacher_forced_argmax(model, tok_bos, prompts, targets, batch_size=2) == one_by_one
    assert [len(r) for r in one_by_one] == [4, 1, 2, 3, 7]


def test_token_accuracy():
    assert token_accuracy([C, D], [C, D]) == 1.0
    assert token_accuracy([C, D], [C, X]) == 0.5
    assert token_accuracy([1, 2, 3, 4], [1, 0, 0, 0]) == 0.25
    with pytest.raises(ValueError):
        token_accuracy([1, 2], [1])


def test_edit_accuracy(tok):
    # succ model: "a b"+"c d" predicts [c, d] -> 1.0; "a b"+"c x" predicts [c, d] vs [c, x] -> 0.5;
    # "a"+"x x" predicts succ(a)=b, succ(x)=[BOS] vs [x, x] -> 0.0; "c"+"d e f" -> 1.0.
    scores = edit_accuracy(succ_llama(), tok, ["a b", "a b", "a", "c"], ["c d", "c x", "x x", "d e f"], batch_size=3)
    assert scores == [1.0, 0.5, 0.0, 1.0]


# --- locality ---------------------------------------------------------------------------------------------------

def test_locality_one_of_four_changed():
    assert locality_agreement([[3, 4, 5, 6], [1, 2]], [[3, 4, 9, 6], [1, 2]]) == [0.75, 1.0]
    with pytest.raises(ValueError):
        locality_agreement([[1]], [[1], [2]])


def test_locality_after_an_edit(tok):
    # Probe "a b" + "c d e f": positions read b, c, d, e -> pre-edit [c, d, e, f].
    # The "edit" makes c predict x (lm_head row x reads c's dim twice as strongly as row d): post [c, x, e, f].
    model = succ_llama()
    pre = teacher_forced_argmax(model, tok, ["a b", "e"], ["c d e f", "f"])
    with torch.no_grad():
        model.lm_head.weight[X, C] = 2.0
    post = teacher_forced_argmax(model, tok, ["a b", "e"], ["c d e f", "f"])
    assert pre == [[C, D, E, F], [F]] and post == [[C, X, E, F], [F]]
    assert locality_agreement(pre, post) == [0.75, 1.0]


# --- fluency ----------------------------------------------------------------------------------------------------
# Per text: (2/3 * H2 + 4/3 * H3) / 2 with base-2 entropies of the bigram and trigram frequencies.

def test_ngram_entropy_repeated_word_is_zero():
    # "a a a a": one bigram type, one trigram type -> H2 = H3 = 0.
    assert ngram_entropy(["a a a a"]) == 0.0


def test_ngram_entropy_all_distinct():
    # "a b c d e": 4 distinct bigrams -> H2 = log2 4 = 2; 3 distinct trigrams -> H3 = log2 3.
    # (2/3 * 2 + 4/3 * log2 3) / 2 = 2/3 + 2/3 log2 3
    assert ngram_entropy(["a b c d e"]) == pytest.approx(2 / 3 + 2 / 3 * math.log2(3))


def test_ngram_entropy_skewed_and_averaged_over_texts():
    # "a b a b": bigrams ab, ba, ab -> p = (2/3, 1/3) -> H2 = log2 3 - 2/3; trigrams aba, bab -> H3 = 1.
    # (2/3 (log2 3 - 2/3) + 4/3) / 2 = log2(3)/3 + 4/9. Averaged with "a a a a" (0): half of that.
    skewed = math.log2(3) / 3 + 4 / 9
    assert ngram_entropy(["a b a b"]) == pytest.approx(skewed)
    assert ngram_entropy(["a b a b", "a a a a"]) == pytest.approx(skewed / 2)


def test_ngram_entropy_punctuation_case_and_short_texts():
    # "Hi, hi." -> Hi , hi . : 3 distinct bigrams (log2 3), 2 distinct trigrams (1) -> log2(3)/3 + 2/3.
    assert ngram_entropy(["Hi, hi."]) == pytest.approx(math.log2(3) / 3 + 2 / 3)
    # Case is kept by default (as ROME's nltk tokens are): "A a A a" is the "a b a b" pattern; folded, it is "a a a a".
    assert ngram_entropy(["A a A a"]) == pytest.approx(math.log2(3) / 3 + 4 / 9)
    assert ngram_entropy(["A a A a"], lowercase=True) == 0.0
    # One word has no bigrams or trigrams -> 0.
    assert ngram_entropy(["hello"]) == 0.0
    with pytest.raises(ValueError):
        ngram_entropy([])


# --- generative adoption ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, aliases, hit", [
    ("You must go now", ["US"], False),                      # inside a word
    ("Made in the US.", ["US"], True),                       # before a full stop
    ("He lived in the U.S.S.R. for years", ["U.S.S.R."], True),
    ("He was born in the U.S.S.R.", ["U.S.S.R."], True),     # alias's own dot at the end of the text
    ("the U.S.S.R., then Russia", ["U.S.S.R."], True),
    ("the USSR fell", ["U.S.S.R."], False),                  # only listed spellings count
    ("the soviet union fell", ["USSR", "Soviet Union"], True),
    ("paris is lovely", ["Paris"], True),                    # case-insensitive
    ("Parisian food", ["Paris"], False),
    ("New\nYork in winter", ["New York"], True),             # any whitespace inside a phrase
    ("A New Yorker", ["New York"], False),
    ("I write C++ daily", ["C++"], True),                    # regex characters are literal
    ("anything", ["", "  "], False),                         # blank aliases match nothing
])
def test_mentions(text, aliases, hit):
    assert mentions(text, aliases) is hit


def test_adoption_rates():
    responses = ["Paris is the capital.", "It is Rome.", "rome or paris?", "London, surely."]
    # new "Paris": responses 1 and 3 -> 2/4; old "Rome": responses 2 and 3 -> 2/4.
    assert adoption_rates(responses, ["Paris"], ["Rome"]) == {"new": 0.5, "old": 0.5}
    # No old answer known -> old is None; "London" alone is 1/4.
    assert adoption_rates(responses, ["London"], []) == {"new": 0.25, "old": None}
    with pytest.raises(ValueError):
        adoption_rates([], ["Paris"], [])


def test_protocols_cover_every_metric():
    assert set(PROTOCOLS) == {"reliability", "generalization", "portability", "locality", "fluency",
                              "adoption_new", "adoption_old"}
    assert all(text.strip() for text in PROTOCOLS.values())
