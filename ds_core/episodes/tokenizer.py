"""The character-level tokenizer of DS-Lens' own models, built in code with `tokenizers`.

Every printable ASCII character is one token; the format's special tokens are whole tokens. It is
wrapped as a `PreTrainedTokenizerFast` and saved with each checkpoint, so a checkpoint loads with
`AutoTokenizer` like any other. Nothing else in ds_core may assume this tokenizer: code that needs
decision tokens goes through a `RoleTagger` (ds_core.episodes.roles).
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
STOP_TOKEN, RESAMPLE_TOKEN = "[STOP]", "[RESAMPLE]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
DECISION_TOKENS = (STOP_TOKEN, RESAMPLE_TOKEN)
CHARS = tuple(chr(c) for c in range(32, 127))  # printable ASCII, space included


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the char-level tokenizer: ids 0-3 specials, 4-5 decisions, then printable ASCII."""
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + DECISION_TOKENS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=4096,
        padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": list(DECISION_TOKENS)})
    return tok


def decision_token_ids(tokenizer) -> dict[str, int] | None:
    """{'STOP': id, 'RESAMPLE': id} when the tokenizer has the format's decision tokens, else None."""
    vocab = tokenizer.get_vocab()
    if STOP_TOKEN in vocab and RESAMPLE_TOKEN in vocab:
        return {"STOP": vocab[STOP_TOKEN], "RESAMPLE": vocab[RESAMPLE_TOKEN]}
    return None


# end-of-turn tokens of common chat templates (ChatML, Llama 3, Phi-3, Gemma, GPT-2 style)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")


GENERATION_EOS_ATTR = "_ds_lens_generation_eos"  # the generation config's eos ids, kept on the tokenizer


def register_generation_config(tokenizer, generation_config) -> None:
    """Record a model's generation-config eos ids (e.g. `<|endoftext|>` where the tokenizer's eos
    is `<|im_end|>`) on its tokenizer. load_checkpoint and rollout call it, so the rollout that
    stops on these ids and the parser that reads them as the end of the turn use one set."""
    gen = getattr(generation_config, "eos_token_id", None)
    if gen is None:
        return
    new = {int(x) for x in (gen if isinstance(gen, (list, tuple)) else [gen]) if x is not None}
    have = getattr(tokenizer, GENERATION_EOS_ATTR, frozenset())
    if not new <= have:
        try:
            setattr(tokenizer, GENERATION_EOS_ATTR, frozenset(have | new))
        except AttributeError:  # a tokenizer that takes no attributes: only calls that pass the config know
            pass


def end_of_turn_ids(tokenizer, generation_config=None) -> set[int]:
    """Token ids that end a generation (the one definition of the end of a turn, used by the
    rollout and every parser): eos, the generation config's eos ids (a list for chat models;
    recorded on the tokenizer by register_generation_config, or passed here, which records them),
    and the known end-of-turn tokens the tokenizer has as special tokens."""
    if generation_config is not None:
        register_generation_config(tokenizer, generation_config)
    ids: set[int] = set(getattr(tokenizer, GENERATION_EOS_ATTR, ()))
    gen = getattr(generation_config, "eos_token_id", None)
    if gen is not None:
        ids.update(int(x) for x in (gen if isinstance(gen, (list, tuple)) else [gen]) if x is not None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.add(int(eos))
    # special tokens only, looked up one by one: get_vocab() builds the whole vocabulary (~37 ms
    # for a 49k one) and this runs for every parsed episode
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    ids.update(int(tokenizer.convert_tokens_to_ids(t)) for t in END_OF_TURN_TOKENS if t in special)
    return ids
