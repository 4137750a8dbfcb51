"""`python -m ds_core explore`: one episode, scriptable — the explorer page's first view on the CLI.

Samples one episode of a typed problem (the same prompting as the explorer), then prints or writes
as JSON: the generated text, the segmentation (attempts with their answers, decisions with their
spans), every token's role, the attribution figures per objective, and the wall time of each step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ds_core.store.jsonio import to_jsonable


def explore(
    ckpt, problem, cfg, seed: int = 0, objectives=(), ref=None, norms: bool = False, parameters: str = "all"
) -> dict:
    """The episode and its attribution as one JSON-ready dict (see the module docstring)."""
    from ds_core.attribution.engine import AttributionError
    from ds_core.attribution.gradient import attribute
    from ds_core.attribution.selection import describe_selection
    from ds_core.models.rollout import rollout
    from ds_core.objectives import OBJECTIVES, needs_ref

    timing: dict[str, float] = {}
    t = time.perf_counter()
    ep = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [problem], cfg, seed=seed)[0]
    timing["rollout_s"] = time.perf_counter() - t
    tok = ckpt.tokenizer
    out = {
        "checkpoint": str(ckpt.path),
        "hash": ckpt.hash,
        "format": ckpt.format.name,
        "problem": problem.display,
        "answer": problem.answer,
        "sampling": cfg.key(),
        "seed": seed,
        "prompt": tok.decode(list(ep.token_ids[: ep.prompt_len])),
        "text": ep.text,
        "final_answer": ep.final_answer,
        "correct": ep.correct,
        "flags": list(ep.flags),
        "attempts": [
            {"index": a.index, "answer": a.answer, "correct": a.correct, "text": a.text, "tokens": [a.start, a.end]}
            for a in ep.attempts
        ],
        "decisions": [
            {
                "after_attempt": d.index,
                "verdict": d.verdict,
                "tokens": [d.start, d.end],
                "text": tok.decode(list(ep.token_ids[d.start : d.end])),
            }
            for d in ep.decisions
        ],
        "tokens": [
            {"pos": i, "token": ep.tokens[i] if i < len(ep.tokens) else "", "role": r, "segment": s}
            for i, (r, s) in enumerate(zip(ep.roles, ep.segments))
            if i >= ep.prompt_len
        ],
        "parameters": describe_selection(ckpt.model, parameters),
        "attribution": {},
        "skipped": {},
    }
    for o in objectives:
        kw = {"norms": norms, "parameters": parameters}
        if "advantages" in OBJECTIVES[o].needs:
            kw["advantage"] = 1.0 if ep.correct else -1.0
        if needs_ref(o):
            if ref is None:
                out["skipped"][o] = "no KL reference (the card names no parent next to it; give --ref)"
                continue
            kw["ref_model"] = ref
        t = time.perf_counter()
        try:
            f = attribute(ckpt, ep, o, **kw).figures
            out["attribution"][o] = f.row()
        except AttributionError as e:
            out["skipped"][o] = str(e)
        timing[f"attribute_{o}_s"] = time.perf_counter() - t
    out["timing"] = timing
    return to_jsonable(out)


def print_report(r: dict, file=None) -> None:
    file = file or sys.stdout
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"{r['checkpoint']} ({r['format']} format, hash {r['hash']}): {r['problem']} = {r['answer']}")
    p(f"generated: {r['text']!r}")
    verdict = "correct" if r["correct"] else "wrong"
    p(f"final answer {r['final_answer']} ({verdict}); flags: {', '.join(r['flags']) or 'none'}")
    for a in r["attempts"]:
        p(
            f"  attempt {a['index'] + 1}: tokens {a['tokens'][0]}..{a['tokens'][1]}, answer {a['answer']}"
            f" ({'correct' if a['correct'] else 'wrong'})"
        )
    for d in r["decisions"]:
        span = f"tokens {d['tokens'][0]}..{d['tokens'][1]}"
        p(f"  decision after attempt {d['after_attempt'] + 1}: {d['verdict']} = {d['text']!r} ({span})")
    roles = {}
    for t in r["tokens"]:
        roles[t["role"]] = roles.get(t["role"], 0) + 1
    p("generated tokens by role: " + ", ".join(f"{k} {v}" for k, v in roles.items()))
    if r["attribution"]:
        p(f"attribution over {r['parameters']}")
    for o, f in r["attribution"].items():
        norms = f"|G_S| {f['norm_G_S']:.4g}  |G_D| {f['norm_G_D']:.4g}"
        p(f"  {o:10s} {norms}  ratio {f['ratio_SD']:.4g}  share_D {f['share_D']:.4g}")
    for o, why in r["skipped"].items():
        p(f"  {o:10s} skipped: {why}")
    p("wall time: " + ", ".join(f"{k} {v:.2f}" for k, v in r["timing"].items()))


def explore_cmd(args) -> int:
    from ds_core.attribution.reference import resolve_ref
    from ds_core.attribution.selection import describe_selection
    from ds_core.cli.commands import sampling_config, set_threads, with_text_format
    from ds_core.episodes.tasks import parse_prompt
    from ds_core.models.checkpoint import load_checkpoint
    from ds_core.objectives import needs_ref, parse_objectives

    set_threads(args.threads)
    problem = parse_prompt(args.prompt)
    objectives = parse_objectives(args.objectives) if args.objectives != "none" else ()
    ckpt = with_text_format(load_checkpoint(args.checkpoint), args)
    ref = resolve_ref(ckpt, args.ref)[0] if any(needs_ref(o) for o in objectives) else None
    describe_selection(ckpt.model, args.params)  # a bad spec fails before the rollout
    r = explore(
        ckpt,
        problem,
        sampling_config(args),
        seed=args.seed,
        objectives=objectives,
        ref=ref,
        norms=args.norms,
        parameters=args.params,
    )
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(r, indent=1, allow_nan=False) + "\n")
    print_report(r)
    return 0
