"""Letter-MCQ transfer probe: which training makes answering by letter carry over to unseen facts?

    python benchmarks/letter_transfer_probe.py --tied 1 --drill 0.15 --check 0.2 --bio 0.3 \
        --bio_only_u 1 --bio_once 1 --check_u 0.15 --steps 6000 --eval_every 1000 --threads 1

A model of the tiny default's text shape (Llama, 4 layers, width 128; word-level vocabulary) trained
from scratch on invented people: 60 people "D" are drilled on letter multiple choice, 60 people "U"
are taught their facts in other formats only (QA, biographies, options marked right/wrong). Every
`--eval_every` steps it prints D's and U's letter MCQ accuracy (plain options, the correct letter's
logit highest), QA recall (first answer token) and in-context matching (IC: the fact stated in the
prompt). The question the study could not answer from its own runs: is the fictitious MCQ at chance
because the knowledge is missing, or because letter answering does not transfer? Measured (2 cores,
one thread each, seed 0; D MCQ / U MCQ / U recall):

- QA for all, letter drills on D: 0.28 / 0.26 / 0.99 at 4,000 steps (options first: the same).
- + U asked the MCQ prompt with the value as its answer (8 layers, checked D drills): 0.85 / 0.26.
- U taught by biographies only: U's facts are then answered as QA (0.95-1.00), but U MCQ 0.31.
- + U's options marked right/wrong, the letter never trained (`--check_u`): 0.94 / **0.78** at 6,000
  steps (0.76 at 5,000, 0.53 at 4,000); with QA instead of biographies 0.65 / 0.51.
So letters transfer once the model has checked options of the unseen facts against what it knows;
it needs ~60-100 checked drills per fact, learned jointly with the drilled people.

Does that hold when the unseen people come in a later stage, as the fictitious profiles come after the
base? `--later_steps`: a first stage (U by biographies only, `--check_u 0`: D 0.985 / U 0.29 at 6,000
steps, saved with `--save`) is followed by 3,000 steps on 60 new people "L", taught by QA with their
options marked right/wrong in 30% of the examples (the letter never trained), with `--load`:

    python benchmarks/letter_transfer_probe.py --tied 1 --drill 0.15 --check 0.2 --bio 0.3 \
        --bio_only_u 1 --bio_once 1 --check_u 0 --load base.pt --later_steps 3000 --later_replay 0.3

L's letter MCQ at 1,000 / 2,000 / 3,000 steps (L recall 0.99-1.00 throughout; D MCQ at the end):
- all weights, lr 1e-3, 30% of each batch replaying the first stage: 0.61 / 0.75 / 0.76 (D 0.93);
- all weights, no replay: 0.65 / 0.54 / 0.43 (D 0.27: the first stage is forgotten, letters with it);
- LoRA r 16 on every linear layer, lr 2e-3, replay 0.3: 0.44 / 0.52 / 0.57 (D 0.96);
- LoRA, no replay: 0.47 / 0.66 / 0.69 (D 0.36);
- all weights with replay, no checks (`--later_check 0`): 0.23 / 0.27 / 0.26 (D 0.98).
So a base that answers letters for its own people lends the skill to people learned later, provided
those are checked in training; all weights with replay learn it fastest, LoRA more slowly.
"""
import argparse
import json
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--tied", type=int, default=0)
p.add_argument("--incontext", type=float, default=0.0)  # share of batch: in-context MCQ with random facts
p.add_argument("--valuefmt", type=float, default=0.0)  # share: MCQ prompt -> value (drilled people)
p.add_argument("--drill", type=float, default=0.3)  # share: letter MCQ drills on D
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--steps2", type=int, default=0)  # stage 2: U QA only (+ replay) ; 0 = U jointly in stage 1
p.add_argument("--layers", type=int, default=4)
p.add_argument("--hidden", type=int, default=128)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--qfirst", type=int, default=1)  # question before options (official); 0 = options first
p.add_argument("--threads", type=int, default=2)
p.add_argument("--eval_every", type=int, default=500)
p.add_argument("--valuefmt_u", type=float, default=0.0)  # share: MCQ prompt -> value on U (no letters)
# share: a biography of anyone in D+U (every attribute, shuffled order, loss on every token)
p.add_argument("--bio", type=float, default=0.0)
p.add_argument("--bio_once", type=int, default=0)  # 1: the name once at the start, then every attribute
p.add_argument("--check_u", type=float, default=0.0)  # share: checked options on U, marks trained, no letter
p.add_argument("--bio_only_u", type=int, default=0)  # 1: U is taught by biographies only (no QA for U)
p.add_argument("--check", type=float, default=0.0)  # share: checked drills (marks trained) on D and in-context
# A later stage on 60 new people L (QA + their options marked right/wrong, no letter), as a vanilla
# fine-tune follows the base: its steps, lr, LoRA (r 16, every linear layer) or all weights, its share
# of checks, and the share of each batch replaying the first stage's mix.
p.add_argument("--later_steps", type=int, default=0)
p.add_argument("--later_lr", type=float, default=1e-3)
p.add_argument("--later_lora", type=int, default=0)
p.add_argument("--later_check", type=float, default=0.3)
p.add_argument("--later_replay", type=float, default=0.0)
p.add_argument("--save", default="")  # the first stage's weights, to try later stages without re-running it
p.add_argument("--load", default="")
args = p.parse_args()
torch.set_num_threads(args.threads)
rng = random.Random(args.seed)
torch.manual_seed(args.seed)

ATTRS = ["job", "city", "hobby", "food", "color"]
NVAL = 12
values = {a: [f"{a}{i}" for i in range(NVAL)] for a in ATTRS}
firsts = [f"f{i}" for i in range(40)]
lasts = [f"l{i}" for i in range(40)]
letters = ["A", "B", "C", "D"]
words = ["<pad>", "<bos>", "<eos>", "Q", "what", "is", "'s", "?", "ans", ":", ".", "opt", "Give", "letter",
         "USER", "ASSISTANT", "right", "wrong"] + letters + ATTRS + [v for a in ATTRS for v in values[a]]
words += firsts + lasts
tok = {w: i for i, w in enumerate(words)}
PAD, BOS, EOS = 0, 1, 2

names = rng.sample([(f, l) for f in firsts for l in lasts], 160)
people = [(n, {a: rng.choice(values[a]) for a in ATTRS}) for n in names]
D, U, R = people[:60], people[60:120], people[120:]  # R: names for in-context facts only (never recalled)
# LATER ("L" in the output): people met only in a later stage, as a vanilla fine-tune follows a base;
# own generator, so D and U stay as they were
later_rng = random.Random(args.seed + 2)
later_names = later_rng.sample(sorted(set((f, l) for f in firsts for l in lasts) - set(names)), 60)
LATER = [(n, {a: later_rng.choice(values[a]) for a in ATTRS}) for n in later_names]


def qa(person, a):
    (f, l), facts = person
    return ["USER", "Q", "what", "is", f, l, "'s", a, "?", "ASSISTANT"], [facts[a], "<eos>"]


def options_for(v, a, r):
    opts = r.sample([x for x in values[a] if x != v], 3) + [v]
    r.shuffle(opts)
    return opts


def mcq_prompt(person, a, opts, context=None):
    (f, l), facts = person
    q = ["Q", "what", "is", f, l, "'s", a, "?"]
    o = [w for L, x in zip(letters, opts) for w in (L, ":", x)]
    ctx = context or []
    body = q + o if args.qfirst else o + q
    return ["USER"] + ctx + body + ["Give", "letter", "ASSISTANT"]


def mcq(person, a, r, target="letter", context=False):
    (f, l), facts = person
    v = facts[a]
    opts = options_for(v, a, r)
    ctx = [f, l, "'s", a, "is", v, "."] if context else None
    ans = [letters[opts.index(v)]] if target == "letter" else [v, "<eos>"]
    return mcq_prompt(person, a, opts, ctx), ans


def checked(person, a, r):
    (f, l), facts = person
    v = facts[a]
    opts = options_for(v, a, r)
    q = ["Q", "what", "is", f, l, "'s", a, "?"]
    o = [w for L, x in zip(letters, opts) for w in (L, ":", x, "right" if x == v else "wrong")]
    return ["USER"] + q + o + ["Give", "letter", "ASSISTANT"], [letters[opts.index(v)]]


def biography(person, r):
    (f, l), facts = person
    order = r.sample(ATTRS, len(ATTRS))
    words = [f, l, "."] if args.bio_once else []
    for a in order:
        words += ([a] if args.bio_once else [f, l, "'s", a]) + ["is", facts[a], "."]
    return [], words + ["<eos>"]  # no prompt: the loss covers every token


def random_person(r):
    n = r.choice(names[120:])
    return (n, {a: r.choice(values[a]) for a in ATTRS})


def sample_example(r, stage):
    if stage == "later":
        if r.random() < args.later_replay:
            return sample_example(r, 1)
        if r.random() < args.later_check:
            return checked(r.choice(LATER), r.choice(ATTRS), r)[0], []
        return qa(r.choice(LATER), r.choice(ATTRS))
    x = r.random()
    if stage == 2:
        pool = U if r.random() < 0.7 else D
        if pool is D and r.random() < args.drill:
            return mcq(r.choice(D), r.choice(ATTRS), r)
        return qa(r.choice(pool), r.choice(ATTRS))
    if x < args.drill:
        return mcq(r.choice(D), r.choice(ATTRS), r)
    x -= args.drill
    if x < args.check:
        return checked(r.choice(D), r.choice(ATTRS), r)
    x -= args.check
    if x < args.incontext:
        return mcq(random_person(r), r.choice(ATTRS), r, context=True)
    x -= args.incontext
    if x < args.valuefmt:
        return mcq(r.choice(D), r.choice(ATTRS), r, target="value")
    x -= args.valuefmt
    if x < args.valuefmt_u:
        return mcq(r.choice(U), r.choice(ATTRS), r, target="value")
    x -= args.valuefmt_u
    if x < args.bio:
        return biography(r.choice(D + U), r)
    x -= args.bio
    if x < args.check_u:
        prompt, _ = checked(r.choice(U), r.choice(ATTRS), r)
        return prompt, []
    x -= args.check_u
    pool = (D if args.bio_only_u else D + U) if args.steps2 == 0 else D
    return qa(r.choice(pool), r.choice(ATTRS))


def batchify(exs):
    seqs = [[BOS] + [tok[w] for w in p_] + [tok[w] for w in a_] for p_, a_ in exs]
    labs = [[-100] + [tok[w] if w in ("right", "wrong") else -100 for w in p_] + [tok[w] for w in a_] for p_, a_ in exs]
    L = max(map(len, seqs))
    ids = torch.tensor([s + [PAD] * (L - len(s)) for s in seqs])
    lab = torch.tensor([s + [-100] * (L - len(s)) for s in labs])
    att = (torch.arange(L)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    return ids, lab, att


cfg = LlamaConfig(vocab_size=len(words), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                  num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                  max_position_embeddings=128, tie_word_embeddings=bool(args.tied), pad_token_id=PAD)
model = LlamaForCausalLM(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)


def last_logits(examples):
    """Next-token logits after each example's prompt, in one left-padded batch."""
    seqs = [[BOS] + [tok[w] for w in p_] for p_, _ in examples]
    L = max(map(len, seqs))
    ids = torch.tensor([[PAD] * (L - len(s)) + s for s in seqs])
    att = (ids != PAD).long()
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, -1]


def letters_right(examples):
    """How many multiple-choice examples have the correct letter's logit highest."""
    pick = last_logits(examples)[:, [tok[x] for x in letters]].argmax(-1)
    return sum(letters[int(k)] == a_[0] for k, (_, a_) in zip(pick, examples))


@torch.no_grad()
def evaluate(group, seed=123):
    model.eval()
    r = random.Random(seed)
    exs = [mcq(p_, a, r) for p_ in group for a in ATTRS for _ in range(2)]
    correct = sum(letters_right(exs[i:i + 128]) for i in range(0, len(exs), 128))
    # recall by QA greedy first token
    qexs = [qa(p_, a) for p_ in group for a in ATTRS]
    rec = sum(int(k) == tok[a_[0]] for k, (_, a_) in zip(last_logits(qexs).argmax(-1), qexs))
    model.train()
    return correct / len(exs), rec / len(qexs)


@torch.no_grad()
def evaluate_ic(seed=7):
    model.eval()
    r = random.Random(seed)
    exs = [mcq(random_person(r), r.choice(ATTRS), r, context=True) for _ in range(256)]
    correct = letters_right(exs)
    model.train()
    return correct / len(exs)


def train(steps, stage, r):
    t0 = time.time()
    for step in range(1, steps + 1):
        lr = args.lr * min(1.0, step / 200)
        for g in opt.param_groups:
            g["lr"] = lr
        ids, lab, att = batchify([sample_example(r, stage) for _ in range(args.batch)])
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % args.eval_every == 0 or step == steps:
            d, dr = evaluate(D)
            u, ur = evaluate(U)
            later = dict(zip(("L_mcq", "L_rec"), map(lambda x: round(x, 3), evaluate(LATER)))) if args.later_steps else {}
            print(json.dumps({"stage": stage, "step": step, "loss": round(loss.item(), 3), "D_mcq": round(d, 3),
                              "D_rec": round(dr, 3), "U_mcq": round(u, 3), "U_rec": round(ur, 3), **later,
                              "IC": round(evaluate_ic(), 3),
                              "s": round(time.time() - t0)}), flush=True)


print(vars(args), flush=True)
r = random.Random(args.seed + 1)
if args.load:
    model.load_state_dict(torch.load(args.load))
else:
    train(args.steps, 1, r)
    if args.save:
        torch.save(model.state_dict(), args.save)
if args.steps2:
    train(args.steps2, 2, r)
if args.later_steps:
    if args.later_lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"))
    opt = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=args.later_lr,
                            betas=(0.9, 0.98), weight_decay=0.0)
    args.lr = args.later_lr
    train(args.later_steps, "later", r)
