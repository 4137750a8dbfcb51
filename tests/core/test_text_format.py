"""The text format on chat models: prompting through the chat template, stopping at the end of the
turn, answers read from natural-language attempts, decision spans that are the marker's sentence,
`<think>` blocks; on a byte-level BPE tokenizer with a ChatML template built in code, and a tiny
random Qwen2 (the shape of Qwen2.5-Instruct / SmolLM2)."""

import pytest
import torch

from ds_core.episodes.episode import RESAMPLE, STOP
from ds_core.episodes.formats import format_for
from ds_core.episodes.roles import LexicalMarkerTagger, TaggerError
from ds_core.episodes.tasks import Problem
from ds_core.episodes.text_format import DEFAULT_READERS, TextFormat
from ds_core.episodes.tokenizer import end_of_turn_ids
from ds_core.models.model import init_model
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig

P = Problem(12, 34)


def chat_episode(tok, fmt, generated: str, end: bool = True):
    prompt = fmt.prompt_ids(tok, P)
    ids = prompt + tok.encode(generated, add_special_tokens=False)
    if end:
        ids.append(tok.convert_tokens_to_ids("<|im_end|>"))
    return fmt.parse(P, ids, len(prompt), tok)


@pytest.mark.parametrize(
    "text,answer",
    [
        ("12 * 34 = 408", 408),
        ("so \\boxed{408} and later 400", 408),
        ("The answer is 1,408. Then 7 more steps: 3", 1408),
        ("408 is the final answer, not 12", 408),
        ("12 x 34 = 400 + 8\nthat is 408 = 408", 408),
        ("I get 410 then 408", 408),
        ("<think>12*34 = 400 hmm 408</think>The answer is 408.", 408),
        ("<think>12*34 = 408</think>so that is it", 408),
        ("<think>no idea</think>The answer is 407", 407),
    ],
)
def test_answers_are_read_in_reader_order(text, answer):
    r = TextFormat().read_attempt(text, P)
    assert (r.answer, r.malformed) == (answer, False)


def test_reader_order_is_configurable():
    text = "\\boxed{1} and the answer is 2, finally 3"
    assert TextFormat().read_attempt(text, P).answer == 1
    assert TextFormat(readers=("answer_is", "last_number")).read_attempt(text, P).answer == 2
    assert TextFormat(readers=("last_number",)).read_attempt(text, P).answer == 3
    assert TextFormat().read_attempt("no number", P).malformed
    with pytest.raises(ValueError, match="readers"):
        TextFormat(readers=("nope",))
    with pytest.raises(ValueError, match="template"):
        TextFormat(instruction="What is {x}?")
    assert DEFAULT_READERS[0] == "boxed"


def test_chat_prompts_go_through_the_template(chat_tokenizer, bpe_tokenizer):
    fmt = format_for(chat_tokenizer)
    assert isinstance(fmt, TextFormat) and fmt.chat and fmt.tagger.span == "sentence"
    text = chat_tokenizer.decode(fmt.prompt_ids(chat_tokenizer, P))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "What is 12 times 34?" in text and "The answer is N" in text
    custom = TextFormat.for_tokenizer(chat_tokenizer, system=None, instruction="{a}+{b}?")
    assert (
        chat_tokenizer.decode(custom.prompt_ids(chat_tokenizer, P))
        == "<|im_start|>user\n12+34?<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = format_for(bpe_tokenizer)  # no chat template: the plain template, marker spans
    assert not plain.chat and plain.tagger.span == "marker"
    assert bpe_tokenizer.decode(plain.prompt_ids(bpe_tokenizer, P)) == "Question: What is 12 times 34? Answer:"


def test_end_of_turn_is_stop(chat_tokenizer):
    end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in end_of_turn_ids(chat_tokenizer)
    assert end_of_turn_ids(chat_tokenizer) >= {chat_tokenizer.eos_token_id, end}
    ep = chat_episode(chat_tokenizer, format_for(chat_tokenizer), "12 times 34 is 408.")
    assert [d.verdict for d in ep.decisions] == [STOP] and ep.correct and not ep.flags
    assert ep.roles[-1] == "decision"


def test_a_decision_is_the_markers_sentence(chat_tokenizer):
    fmt = format_for(chat_tokenizer)
    ep = chat_episode(chat_tokenizer, fmt, "12 times 34 is 418. Wait, let me recompute that. So it is 408.")
    assert [d.verdict for d in ep.decisions] == [RESAMPLE, STOP]
    span = chat_tokenizer.decode(ep.token_ids[ep.decisions[0].start : ep.decisions[0].end])
    assert span.strip() == "Wait, let me recompute that."
    assert [a.answer for a in ep.attempts] == [418, 408] and ep.correct
    # marker spans (the plain default) keep only the marker phrase
    plain = TextFormat(chat=True)
    ep2 = chat_episode(chat_tokenizer, plain, "12 times 34 is 418. Wait, let me recompute that. So it is 408.")
    assert chat_tokenizer.decode(ep2.token_ids[ep2.decisions[0].start : ep2.decisions[0].end]).strip() == (
        "Wait, let me recompute"
    )
    with pytest.raises(TaggerError, match="span"):
        LexicalMarkerTagger(span="paragraph")


@pytest.mark.parametrize(
    "generated,verdicts,answers",
    [
        ("Wait, 12 times 34. It is 408.", [RESAMPLE, STOP], [None, 408]),  # a marker at the start
        ("It is 418, wait no.\nIt is 408.", [RESAMPLE, STOP], [418, 408]),  # mid-sentence, up to the line break
        ("418. I made a mistake. Let me recompute. 408.", [RESAMPLE, STOP], [418, 408]),  # adjacent sentences
        ("It is 408.", [STOP], [408]),  # no marker
        ("It is 418. Wait, 12 times 34 is 408.", [RESAMPLE, STOP], [418, 408]),  # the revision in the marker's sentence
        ("It is 418. Wait: 408", [RESAMPLE, STOP], [418, 408]),  # no sentence end at all
    ],
)
def test_segmentation_of_hand_written_traces(chat_tokenizer, generated, verdicts, answers):
    ep = chat_episode(chat_tokenizer, format_for(chat_tokenizer), generated)
    assert [d.verdict for d in ep.decisions] == verdicts
    assert [a.answer for a in ep.attempts] == answers


def test_rollout_stops_at_the_end_of_turn(chat_tokenizer):
    """A tiny random Qwen2 with the chat tokenizer: generation ends at <|im_end|> (not only eos)."""
    tok = chat_tokenizer
    model = init_model(tok, "qwen2", hidden=32, layers=1, heads=2)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # make <|im_end|> by far the likeliest next token
        model.lm_head.weight[end] += 50 * model.lm_head.weight.abs().max()
    fmt = format_for(tok)
    ep = rollout(model, tok, fmt, [P], SamplingConfig(max_new_tokens=20), seed=0)[0]
    assert ep.token_ids[-1] == end and len(ep.generated_ids) < 20
    assert [d.verdict for d in ep.decisions] == [STOP]


def test_cli_prompt_options_key_their_own_runs(chat_tokenizer, tmp_path, capsys):
    """`eval` with a custom instruction samples from that prompt and stores the run under its own
    key; the defaults keep the plain key; a DS-format checkpoint refuses the options cleanly."""
    from conftest import assert_clean_cli_error

    from ds_core.cli import main
    from ds_core.episodes.tokenizer import build_tokenizer
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.store import ResultsStore

    d = tmp_path / "chat"
    save_checkpoint(d, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("chat"))
    base = ["eval", "--checkpoint", str(d), "--sizes", "1x1", "--n", "2", "--max-new-tokens", "8", "--quiet"]
    store_dir = tmp_path / "data"
    assert main([*base, "--data-dir", str(store_dir)]) == 0
    assert main([*base, "--data-dir", str(store_dir), "--instruction", "{a}+{b}?", "--system-prompt", ""]) == 0
    runs = ResultsStore(store_dir).list_runs()
    formats = sorted((r.key.extra.get("format") or {}).get("instruction", "default") for r in runs)
    assert formats == ["default", "{a}+{b}?"]
    custom = next(r for r in runs if r.key.extra.get("format"))
    ep = ResultsStore(store_dir).load_episodes(custom.digest)[0]
    prompt = chat_tokenizer.decode(ep.token_ids[: ep.prompt_len])
    assert "<|im_start|>system" not in prompt and "?<|im_end|>" in prompt
    capsys.readouterr()
    ds = tmp_path / "ds"
    tok = build_tokenizer()
    save_checkpoint(ds, init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card("ds"))
    rc = main(["eval", "--checkpoint", str(ds), "--n", "1", "--sizes", "1x1", "--no-store", "--system-prompt", "x"])
    out, err = capsys.readouterr()
    assert_clean_cli_error(rc, out, err, "text-format")


def test_explore_command_on_a_ds_and_a_chat_checkpoint(chat_tokenizer, tmp_path, capsys):
    """`python -m ds_core explore`: the segmentation, roles and figures equal a direct rollout +
    attribute on the same episode; it works on DS-Lens' format and on a chat model."""
    import json

    from ds_core.attribution.gradient import attribute
    from ds_core.cli import main
    from ds_core.episodes.tasks import parse_prompt
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
    from ds_core.paths import SHIPPED_DIR

    out = tmp_path / "rl.json"
    assert (
        main(
            [
                "explore",
                "--checkpoint",
                str(SHIPPED_DIR / "rl"),
                "--prompt",
                "123*45",
                "--objectives",
                "surrogate,sft_sum",
                "--json",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    rl = load_checkpoint(SHIPPED_DIR / "rl")
    ep = rollout(rl.model, rl.tokenizer, rl.format, [parse_prompt("123*45")], SamplingConfig(), seed=0)[0]
    assert r["text"] == ep.text and [a["answer"] for a in r["attempts"]] == [a.answer for a in ep.attempts]
    assert [d["verdict"] for d in r["decisions"]] == [d.verdict for d in ep.decisions]
    assert len(r["tokens"]) == len(ep.token_ids) - ep.prompt_len
    direct = attribute(rl, ep, "sft_sum", norms=False).figures
    assert r["attribution"]["sft_sum"]["ratio_SD"] == pytest.approx(direct.ratio_SD, rel=1e-9)
    assert set(r["timing"]) == {"rollout_s", "attribute_surrogate_s", "attribute_sft_sum_s"}
    assert "decision after attempt 1" in capsys.readouterr().out
    d = tmp_path / "chat"
    save_checkpoint(d, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("chat"))
    assert (
        main(
            [
                "explore",
                "--checkpoint",
                str(d),
                "--prompt",
                "What is 12 plus 34?",
                "--objectives",
                "kl_k3,dft",
                "--max-new-tokens",
                "12",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "text format" in text and "kl_k3" in text and "skipped" in text


def _tokenizer_with_own_end():
    """A chat tokenizer plus a token only the generation config calls end-of-sequence."""
    from conftest import CHATML, build_bpe_tokenizer

    tok = build_bpe_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|eoa|>"]})
    tok.chat_template = CHATML
    return tok, tok.convert_tokens_to_ids("<|eoa|>")


@pytest.mark.parametrize("kind", ["text", "ds"])
def test_generation_config_end_ids_are_stop_for_rollout_and_parser(tmp_path, kind, char_tokenizer):
    """One definition of the end of a turn: a model whose generation_config lists an eos id the
    tokenizer does not (e.g. <|endoftext|> where eos is <|im_end|>) stops on it in the rollout, and
    the parser (after load_checkpoint, and on stored ids) reads it as the end, never as
    missing_decision / unexpected_token."""
    from ds_core.episodes.tokenizer import GENERATION_EOS_ATTR, build_tokenizer
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint

    if kind == "text":
        tok, end = _tokenizer_with_own_end()
    else:  # DS-Lens' own format: the generation config may name the pad token as an end
        tok = build_tokenizer()
        end = tok.pad_token_id
    model = init_model(tok, "qwen2" if kind == "text" else "llama", hidden=32, layers=1, heads=2)
    model.generation_config.eos_token_id = [tok.eos_token_id, end]
    save_checkpoint(tmp_path / "m", model, tok, Card("m"))
    ck = load_checkpoint(tmp_path / "m")
    assert end in end_of_turn_ids(ck.tokenizer) and GENERATION_EOS_ATTR in vars(ck.tokenizer)
    prompt = ck.format.prompt_ids(ck.tokenizer, P)
    body = ck.tokenizer.encode("It is 408.", add_special_tokens=False)
    ep = ck.format.parse(P, prompt + body + [end], len(prompt), ck.tokenizer)
    assert "unexpected_token" not in ep.flags
    if kind == "text":
        assert [d.verdict for d in ep.decisions] == [STOP] and not ep.flags and ep.correct
    # the rollout stops on it and the episode it returns is parsed the same way
    with torch.no_grad():
        ck.model.lm_head.weight[end] += 50 * ck.model.lm_head.weight.abs().max()
    (ep2,) = rollout(ck.model, ck.tokenizer, ck.format, [P], SamplingConfig(max_new_tokens=20), seed=0)
    assert ep2.token_ids[-1] == end and len(ep2.generated_ids) < 20
    assert "unexpected_token" not in ep2.flags and "truncated" not in ep2.flags
    if kind == "text":
        assert [d.verdict for d in ep2.decisions] == [STOP]


def test_one_end_of_turn_for_rollout_parser_and_force_a_stop(tmp_path):
    """A generation config whose eos_token_id is a single id other than the tokenizer's: the
    stored episode read again is STOP; the explorer's 'Force a stop' ends the turn with an id the
    parser reads as the end; a fresh tokenizer object learns the ids when a rollout runs."""
    from ds_core.episodes.tokenizer import GENERATION_EOS_ATTR
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
    from ui.services.explorer_decisions import end_of_turn_token

    tok, end = _tokenizer_with_own_end()
    model = init_model(tok, "qwen2", hidden=32, layers=1, heads=2)
    model.generation_config.eos_token_id = end
    save_checkpoint(tmp_path / "m", model, tok, Card("m"))
    ck = load_checkpoint(tmp_path / "m")
    assert end_of_turn_token(ck) in end_of_turn_ids(ck.tokenizer)
    prompt = ck.format.prompt_ids(ck.tokenizer, P)
    ep = ck.format.parse(
        P, prompt + ck.tokenizer.encode("408", add_special_tokens=False) + [end], len(prompt), ck.tokenizer
    )
    assert [d.verdict for d in ep.decisions] == [STOP] and not ep.flags
    # a tokenizer that never went through load_checkpoint learns them from the rollout
    fresh, end2 = _tokenizer_with_own_end()
    m2 = init_model(fresh, "qwen2", hidden=32, layers=1, heads=2)
    m2.generation_config.eos_token_id = end2
    assert GENERATION_EOS_ATTR not in vars(fresh)
    rollout(m2, fresh, format_for(fresh), [P], SamplingConfig(max_new_tokens=3), seed=0)
    assert end2 in end_of_turn_ids(fresh)
