"""MML (Pan et al. CIKM'22): multimodal meta-learning for cold-start sequential recommendation, end to end.

The network is in :mod:`metarec.nets.mml_net` (meta-learners, fusion) and
:mod:`metarec.seqrec.generator` (cold-start item embeddings); the modalities in
:mod:`metarec.seqrec.modality`. This module holds the learner and the three-stage training of 4.4.2:

1. Meta-learners (eq. 18-20): per task, ``inner.steps`` SGD steps (rate ``inner.lr``) on Theta only, BPR on
   the support prefixes; the outer Adam step on Gamma and Theta from the BPR loss of the query prefix under
   the adapted Theta. The inner loop runs on every task of the meta-batch at once (``engine.inner_loop``
   over (B, ...) fast weights, hand-batched matmuls); second order by default (MAML), ``inner.first_order``
   for FOMAML. The learners of the group are disjoint, so one inner loop over the sum of their losses
   adapts each on its own loss.
2. The generator (4.3): learners frozen; in every meta-batch a proportion ``gen_p0`` of the trained items
   is "forgotten" and their ID embeddings replaced by generated ones; BPR over all prefixes of the
   sequence under the meta-learned Theta (no inner loop: the generator must serve any task).
3. The fusion layer: learners and generator frozen; items forgotten as in stage 2; every learner adapted
   on the support (as at meta-test); cross-entropy of the fused scores over all items at the query.

At meta-test (``adapt``): untrained items get generated ID embeddings (once per call), each learner is
adapted on the support, and ``score`` fuses the learners' full-ranking scores at the requested positions.
Each stage selects its epoch on meta-valid (full ranking, ``select`` metric).

Variants (Table 4 and the baselines): ``mml``; ``mml-nogen`` (no generator: untrained items keep their
random initial ID embeddings); ``mml-nofusion`` (the paper's No-Fusion: the average of the learners'
normalised scores); ``mml-main`` (the main learner alone, with its generator); ``mml-id`` (MML_ID: IDs
only, vanilla attention, no auxiliary learner, no generator); ``ptft-mml`` (PT-FT with the MML network:
stage 1 trains on every prefix without an inner loop, meta-test fine-tunes with the same SGD steps).

Options beyond the paper (issue 17; the defaults are the paper's recipe): ``meta_query=m`` (stage 1's query =
the last m targets of each meta-train window, the support before them, as a new user's task is cut), ``init="pooled"``
(PT + MAML: a stage 0 on every prefix, trained by ``MMLRunConfig.pretrain``, then MAML from there, the start
competing as epoch 0), ``fusion_select="valid"`` (after stage 3 the plain average competes with the learned fusion on
meta-valid; the winner is kept). Results: docs/results/mml/variants.md.

Open choices: negatives for BPR are drawn uniformly from the trained items (never the target); the
meta-valid model selection of stages 1-2 scores with the components trained so far (average fusion
until stage 3); MovieLens has no pictures, so there the group is {ID, text}.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.config import apply_overrides
from metarec.engine.inner import InnerConfig, expand_fast, inner_loop
from metarec.engine.train import TrainConfig, fit, lower_is_better
from metarec.errors import MetarecError
from metarec.io import writer
from metarec.learners.base import Adapted
from metarec.nets.mml_net import Fusion, MMLNetConfig, SeqLearner, pad_row
from metarec.seqrec.batch import SeqBatch, collate_seq
from metarec.seqrec.functional import sample_negatives
from metarec.seqrec.generator import ItemEmbeddingGenerator
from metarec.seqrec.methods import SeqMethod, seq_adapted
from metarec.seqrec.modality import ModalityConfig
from metarec.seqrec.train import seq_train_config


@dataclass(frozen=True)
class MMLConfig:
    net: MMLNetConfig = field(default_factory=MMLNetConfig)
    modality: ModalityConfig = field(default_factory=ModalityConfig)
    use_modalities: bool = True  # False: MML_ID
    inner: InnerConfig = field(default_factory=lambda: InnerConfig(steps=5, lr=1e-3, first_order=False))
    train_mode: str = "maml"  # "maml" (stage 1 through the inner loop) or "pooled" (PT-FT)
    generator: bool = True
    gen_k: int = 10
    gen_p0: float = 0.1
    gen_act: str = "relu"
    retrieval: str = "exact"  # "exact" or "faiss" (exact inner product, needs faiss-cpu)
    feat_dims: tuple = ()  # (modality, D_m) pairs, filled in by the model
    eval_seed: int = 0  # seeds the support negatives of adapt(), so that meta-test adaptation is deterministic
    # Options beyond the paper (issue 17); the defaults are the paper's recipe, so the faithful tables stay as run.
    meta_query: int = 1  # stage 1: query = the last m targets of each meta-train window (1: the last prefix, 4.4.1)
    init: str = "scratch"  # "scratch" (the paper) or "pooled": stage 0 trains on every prefix first (PT + MAML)
    fusion_select: str = "learned"  # "learned" (the paper) or "valid": the average competes on meta-valid


def bpr_per_task(h: Tensor, table: Tensor, target: Tensor, neg: Tensor, mask: Tensor) -> Tensor:
    """(B,) mean BPR loss of each task over its masked output positions (0 for a task without any).

    h: (B, L, d) outputs; table: (n_items + 1, d); target, neg: (B, L) codes; mask: (B, L) bool.
    """
    pos = (h * table[target]).sum(-1)  # (B, L)
    ng = (h * table[neg]).sum(-1)
    per = -F.logsigmoid(pos - ng)
    m = mask.to(h.dtype)
    return (per * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class MMLModel(SeqMethod):
    """The learner group, the generator and the fusion layer, with the stage losses and adaptation.

    ``MMLModel(n_items, config, pool, feats)``: ``pool`` = the trained item indices (meta-train items: BPR
    negatives, the generator's neighbours; the others count as new), ``feats`` = modality -> (n_items, D_m).
    The features are saved once, as persistent buffers; ``config.feat_dims`` records their sizes so that
    :func:`metarec.learners.base.load_learner` can rebuild the model without them.
    """

    name = "mml"

    def __init__(self, n_items: int, config: MMLConfig = MMLConfig(), pool: Tensor | None = None,
                 feats: dict[str, Tensor] | None = None):
        if feats is None:  # rebuilt from a checkpoint: buffers of the recorded sizes, filled by load_state_dict
            feats = {m: torch.zeros(n_items, d) for m, d in config.feat_dims}
        feats = {m: f.float() for m, f in feats.items()} if config.use_modalities else {}
        config = replace(config, feat_dims=tuple((m, int(f.shape[1])) for m, f in sorted(feats.items())))
        super().__init__(n_items, config, pool)
        net = config.net
        if net.fusion not in ("attention", "mean", "main"):
            raise MetarecError(f"unknown fusion {net.fusion!r}: choose attention, mean or main")
        if config.train_mode not in ("maml", "pooled"):
            raise MetarecError(f"unknown train_mode {config.train_mode!r}: choose maml or pooled")
        if config.init not in ("scratch", "pooled"):
            raise MetarecError(f"unknown init {config.init!r}: choose scratch or pooled")
        if config.fusion_select not in ("learned", "valid"):
            raise MetarecError(f"unknown fusion_select {config.fusion_select!r}: choose learned or valid")
        if config.meta_query < 1:
            raise MetarecError(f"meta_query must be >= 1, got {config.meta_query}")
        self.modalities = sorted(feats)
        padded = {}
        for m in self.modalities:  # by code: row 0 = padding; submodules share these tensors
            padded[m] = pad_row(feats[m])
            self.register_buffer(f"feat_{m}", padded[m])
        learners = {"id": SeqLearner("id", n_items, net, bias_feats=padded if net.feature_bias else None)}
        if net.aux and net.fusion != "main":
            for m in self.modalities:
                learners[m] = SeqLearner(m, n_items, net, feat=padded[m])
        self.learners = nn.ModuleDict(learners)
        self.generator = None
        if config.generator and self.modalities:
            self.generator = ItemEmbeddingGenerator({m: padded[m][1:] for m in self.modalities}, net.dim,
                                                    config.gen_k, config.gen_act)
        self.fusion = Fusion(net) if (net.fusion == "attention" and len(self.learners) > 1) else None
        trained = torch.zeros(n_items + 1, dtype=torch.bool)
        trained[self.pool + 1] = True
        self.register_buffer("trained", trained, persistent=False)  # by code
        self.register_buffer("ready", torch.zeros(2, dtype=torch.bool))  # generator trained, fusion trained
        if self.generator is not None:
            self.generator.fit_neighbours(self.pool, config.retrieval)
        self.stage = 1

    # ---------------------------------------------------------------------------------------- parameters
    def theta_names(self) -> list[str]:
        return [f"learners.{k}.{n}" for k, lr in self.learners.items() for n in lr.theta_names()]

    def set_stage(self, stage: int) -> None:
        """Which parameters train: 0 (``init="pooled"``: plain training on every prefix before MAML) and 1 the
        learners (Gamma and Theta), 2 the generator, 3 the fusion layer."""
        self.stage = stage
        for name, p in self.named_parameters():
            owner = name.split(".")[0]
            p.requires_grad_({0: owner == "learners", 1: owner == "learners", 2: owner == "generator",
                              3: owner == "fusion"}[stage])

    def _theta(self) -> dict[str, Tensor]:
        params = dict(self.named_parameters())
        return {n: params[n] for n in self.theta_names()}

    # ------------------------------------------------------------------------------------------ pieces
    def _negatives(self, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, L) codes drawn uniformly from the trained items, never equal to the target."""
        return sample_negatives(target, self.pool + 1, generator)  # codes of the trained items

    def _id_table(self, generated: Tensor | None) -> Tensor:
        """The ID table with rows replaced where ``generated`` (a (n_items+1,) bool mask) is set."""
        table = self.learners["id"].item_emb.weight
        if generated is None or self.generator is None or not bool(generated.any()):
            return table
        codes = torch.nonzero(generated).squeeze(1)
        return table.index_copy(0, codes, self.generator(codes - 1).to(table.dtype))

    def _forget(self) -> Tensor:
        """(n_items + 1,) bool: a random ``gen_p0`` share of the trained items, simulated as new (4.4.2)."""
        draw = torch.rand(self.trained.shape, device="cpu").to(self.trained.device)  # the same draws on every device
        return self.trained & (draw < self.config.gen_p0)

    def _contexts(self, seq: Tensor, id_table: Tensor, learners=None) -> dict[str, tuple]:
        """Per learner: (embedded inputs (B, L, d), bias similarities, output table) — all Gamma-only."""
        out = {}
        for k, lr in self.learners.items():
            if learners is not None and k not in learners:
                continue
            table = lr.table(id_table if k == "id" else None)
            out[k] = (lr.embed(seq, table), lr.sims(seq), table)
        return out

    def _encode_all(self, theta: dict[str, Tensor], ctx: dict, valid: Tensor, training: bool) -> dict[str, Tensor]:
        out = {}
        for k, (x, sims, _) in ctx.items():
            pre = f"learners.{k}."
            sub = {n[len(pre):]: v for n, v in theta.items() if n.startswith(pre)}
            out[k] = self.learners[k].encode(sub, x, valid, sims, training)
        return out

    def _bpr(self, theta, ctx, batch: SeqBatch, neg: Tensor, mask: Tensor, training: bool) -> Tensor:
        """(B,) summed over the learners of the per-task BPR loss at the ``mask`` positions."""
        valid = batch.seq > 0
        hs = self._encode_all(theta, ctx, valid, training)
        return sum(bpr_per_task(hs[k], ctx[k][2], batch.target, neg, mask) for k in hs)

    def _adapt_theta(self, ctx, batch: SeqBatch, neg: Tensor, training: bool, first_order: bool) -> dict:
        """Theta of every task after the inner loop on its support prefixes: name -> (B, ...)."""
        inner = self.config.inner
        fast = expand_fast(self._theta(), len(batch))
        if inner.steps == 0:
            return fast

        def support_loss(f):
            return self._bpr(f, ctx, batch, neg, batch.s_mask, training)  # (B,)

        return inner_loop(fast, support_loss, inner.steps, inner.lr, first_order)

    # ------------------------------------------------------------------------------------- stage losses
    def meta_loss(self, batch: SeqBatch) -> Tensor:
        if self.stage in (0, 1):
            return self._meta_loss(batch, pooled=self.stage == 0 or self.config.train_mode == "pooled")
        if self.stage == 2:
            return self._generator_loss(batch)
        return self._fusion_loss(batch)

    def _meta_loss(self, batch: SeqBatch, pooled: bool | None = None) -> Tensor:
        pooled = self.config.train_mode == "pooled" if pooled is None else pooled
        if not pooled and self.config.meta_query > 1:  # a query of the last m targets, the support before them
            batch = batch.last_queries(self.config.meta_query)
        neg = self._negatives(batch.target)
        ctx = self._contexts(batch.seq, self.learners["id"].item_emb.weight)
        if pooled:  # PT-FT (and PT + MAML's stage 0): plain training on every prefix
            mask = batch.t_mask
            per = self._bpr(self._theta(), ctx, batch, neg, mask, True) * mask.sum(1)
            return per.sum() / mask.sum().clamp_min(1)
        fast = self._adapt_theta(ctx, batch, neg, True, self.config.inner.first_order)
        return self._bpr(fast, ctx, batch, neg, batch.q_mask, True).mean()

    def _generator_loss(self, batch: SeqBatch) -> Tensor:
        if self.generator is None:
            raise MetarecError("this variant has no generator")
        neg = self._negatives(batch.target)
        table = self._id_table(self._forget())
        ctx = self._contexts(batch.seq, table, learners=("id",))
        mask = batch.t_mask
        per = self._bpr(self._theta(), ctx, batch, neg, mask, False) * mask.sum(1)
        return per.sum() / mask.sum().clamp_min(1)

    def _fusion_loss(self, batch: SeqBatch) -> Tensor:
        if self.fusion is None:
            raise MetarecError("this variant has no fusion layer")
        with torch.no_grad():
            forget = self._forget() if self.generator is not None else None
            scores, states = self._group_outputs(batch, self._id_table(forget), batch.q_pos)
        logits = self._fuse(scores, states, use_attention=True)  # (B, Q, N)
        target = torch.gather(batch.target, 1, batch.q_pos) - 1  # (B, Q) item indices
        ce = F.cross_entropy(logits.flatten(0, 1), target.clamp_min(0).flatten(), reduction="none")
        m = batch.q_valid.flatten().to(ce.dtype)
        return (ce * m).sum() / m.sum().clamp_min(1.0)

    # ----------------------------------------------------------------------------------- adapt & score
    def _group_outputs(self, batch: SeqBatch, id_table: Tensor, pos: Tensor, seq: Tensor | None = None):
        """Adapt every learner on ``batch``'s support, then score all items at output positions ``pos``.

        Returns per learner (B, P, n_items) scores and (B, P, max_len * d) prefix states (for the fusion).
        """
        neg = self._negatives(batch.target)
        ctx = self._contexts(batch.seq, id_table)
        fast = self._adapt_theta(ctx, batch, neg, False, True)
        fast = {k: v.detach() for k, v in fast.items()}
        return self._score_with(fast, id_table, batch.seq if seq is None else seq, pos)

    def _score_with(self, fast: dict, id_table: Tensor, seq: Tensor, pos: Tensor):
        ctx = self._contexts(seq, id_table)
        hs = self._encode_all(fast, ctx, seq > 0, False)
        scores, states = {}, {}
        for k, h in hs.items():
            hp = torch.gather(h, 1, pos[..., None].expand(*pos.shape, h.shape[-1]))  # (B, P, d)
            scores[k] = hp @ ctx[k][2][1:].T  # (B, P, n_items)
            if self.fusion is not None:
                states[k] = self.fusion.prefix_states(h, pos)
        return scores, states

    def _fuse(self, scores: dict[str, Tensor], states: dict[str, Tensor], use_attention: bool) -> Tensor:
        if len(scores) == 1:
            return scores["id"]
        keys = sorted(scores, key=lambda k: (k != "id", k))
        p = torch.stack([Fusion.normalise(scores[k]) for k in keys], -2)  # (B, P, K, N) eq. 9
        if use_attention and self.fusion is not None:
            a = self.fusion.weights(torch.stack([states[k] for k in keys], -2))  # (B, P, K) eq. 10-12
        else:
            a = p.new_full(p.shape[:-1], 1.0 / len(keys))
        return (a[..., None] * p).sum(-2)  # (B, P, N) eq. 13

    def fusion_weights(self, batch: SeqBatch) -> Tensor:
        """(B, Q, K) fusion attention at the query positions (learners: id first, then modalities)."""
        with torch.no_grad():
            _, states = self._group_outputs(batch, self._eval_table(), batch.q_pos)
            keys = sorted(states, key=lambda k: (k != "id", k))
            return self.fusion.weights(torch.stack([states[k] for k in keys], -2))

    def _eval_table(self) -> Tensor:
        """The ID table for meta-test: generated rows for every untrained item, once per weight version (a
        server would keep it: it depends on the item features and the trained weights, not on the user)."""
        if self.generator is None or not bool(self.ready[0]):
            return self._id_table(None)
        emb = self.learners["id"].item_emb.weight
        key = (emb._version, id(emb), *(p._version for p in self.generator.parameters()))
        cached = getattr(self, "_table_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        new = ~self.trained
        new[0] = False  # the padding code
        with torch.no_grad():
            table = self._id_table(new)
        self._table_cache = (key, table)
        return table

    def adapt(self, batch: SeqBatch) -> Adapted:
        """Adapt to the tasks of ``batch`` on their support; returns its :class:`~metarec.learners.base.Adapted`."""
        was = self.training
        self.eval()
        with torch.no_grad():
            table = self._eval_table()
            ctx = self._contexts(batch.seq, table)
            neg = self._negatives(batch.target, torch.Generator().manual_seed(self.config.eval_seed))
            fast = {k: v.detach() for k, v in self._adapt_theta(ctx, batch, neg, False, True).items()}
        self.train(was)
        use_att = bool(self.ready[1])

        def score(seq: Tensor, pos: Tensor) -> Tensor:
            with torch.no_grad():
                scores, states = self._score_with(fast, table, seq, pos)
                return self._fuse(scores, states, use_att)

        return seq_adapted(batch, score)

    # ------------------------------------------------------------------------------------------ stages
    def train_stages(self, train_tasks, valid_fn, stage_cfgs: dict, out_dir: Path | None = None,
                     progress: bool = True, cache: dict | None = None, keys: dict | None = None) -> dict:
        """Stages 1-3 of 4.4.2 with :func:`fit_seq`; returns each stage's fit record and seconds.

        ``cache``/``keys``: a dict shared by the variants of one seed and, per stage, a key of everything that
        determines that stage's result. A stage found there is loaded instead of retrained (mml, mml-nogen
        and mml-nofusion share stage 1; mml and mml-nofusion share stage 2: same initialisation, data order
        and losses, so the result is identical).
        """
        record = {}
        owners = {0: "learners.", 1: "learners.", 2: "generator.", 3: "fusion."}
        pretrain = self.config.init == "pooled" and self.config.train_mode == "maml"
        order = ((0, "pretrain"),) * pretrain + ((1, "meta"), (2, "gen_train"), (3, "fusion_train"))
        for stage, key in order:
            if stage == 2 and self.generator is None or stage == 3 and self.fusion is None:
                continue
            self.set_stage(stage)
            if stage > 1:  # from now on adapt() uses this component (also in this stage's model selection)
                self.ready[stage - 2] = True
            ck = None if cache is None or keys is None or key not in keys else keys[key]
            if ck is not None and ck in cache:
                state, fitted = cache[ck]
                self.load_state_dict({**self.state_dict(), **state})
                record[key] = {**fitted, "seconds": 0.0, "shared": True}
                continue
            ckpt = Path(out_dir) / f"checkpoint-stage{stage}.pt" if out_dir is not None else None
            t0 = time.perf_counter()
            # PT + MAML: the pretrained start competes in stage 1's selection as epoch 0
            fitted = fit(self, train_tasks, valid_fn, stage_cfgs[key], checkpoint=ckpt, progress=progress,
                         collate_fn=collate_seq, select_start=stage == 1 and pretrain,
                         identity={"stage": key, "config": asdict(self.config), "tasks": len(train_tasks)})
            record[key] = {**fitted, "seconds": time.perf_counter() - t0 + fitted["resumed_seconds"]}
            if ck is not None:
                state = {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(owners[stage])}
                cache[ck] = (state, fitted)
        if self.fusion is not None and self.config.fusion_select == "valid":
            record["fusion_select"] = self._select_fusion(valid_fn, stage_cfgs["fusion_train"].select,
                                                          record["fusion_train"].get("best") or valid_fn(self))
        self.set_stage(1)
        self.eval()
        return record


    def _select_fusion(self, valid_fn, metric: str, learned: dict) -> dict:
        """``fusion_select="valid"``: the learned fusion (its stage-3 selection's meta-valid ``learned``) against
        the plain average of the learners' normalised scores on meta-valid; the better is kept (``ready[1]``
        says which the model ranks with, and is saved with it). Ties keep the learned fusion."""
        self.ready[1] = False
        average = valid_fn(self)
        sign = -1.0 if lower_is_better(metric) else 1.0
        use_learned = sign * learned[metric] >= sign * average[metric]
        self.ready[1] = use_learned
        return {"metric": metric, "learned": learned[metric], "average": average[metric],
                "chosen": "learned" if use_learned else "average"}


def variant_config(name: str, base: MMLConfig | None = None) -> MMLConfig:
    """The MMLConfig of a registered variant (Table 4 ablations, PT-FT with the MML network)."""
    c = base or MMLConfig()
    if name == "mml":
        return c
    if name == "mml-nogen":
        return replace(c, generator=False)
    if name == "mml-nofusion":
        return replace(c, net=replace(c.net, fusion="mean"))
    if name == "mml-main":
        return replace(c, net=replace(c.net, fusion="main", aux=False))
    if name == "mml-id":
        return replace(c, use_modalities=False, generator=False, net=replace(c.net, feature_bias=False, aux=False))
    if name == "ptft-mml":
        return replace(c, train_mode="pooled")
    raise MetarecError(f"unknown MML variant {name!r}")


@dataclass(frozen=True)
class MMLRunConfig:
    """One MML run: the model and the training of each stage (4.4.2; 5.1.3: local lr 1e-3, 5 local steps)."""

    model: MMLConfig = field(default_factory=MMLConfig)
    meta: TrainConfig = field(default_factory=lambda: seq_train_config(epochs=10, meta_batch=32, lr=1e-3, patience=3))
    gen_train: TrainConfig = field(default_factory=lambda: seq_train_config(epochs=5, meta_batch=64, lr=1e-3,
                                                                             patience=2))
    fusion_train: TrainConfig = field(default_factory=lambda: seq_train_config(epochs=5, meta_batch=64, lr=1e-3,
                                                                                patience=2))
    pretrain: TrainConfig = field(default_factory=lambda: seq_train_config(epochs=10, meta_batch=32, lr=1e-3,
                                                                            patience=3))  # model.init="pooled"
    eval_batch: int = 64


def trained_items(tasks) -> np.ndarray:
    """Item indices that occur in the meta-train sequences (everything else is a new item to MML)."""
    return np.unique(np.concatenate([np.asarray(t.extra["seq"]) for t in tasks]))


def split_overrides(overrides: dict) -> dict:
    """The command's flat overrides as :class:`MMLRunConfig` keys: ``model.*`` -> the model; ``train.*`` ->
    every stage's training (``--quick`` sets train.epochs); ``meta.*``, ``gen_train.*``, ``fusion_train.*``
    -> one stage (``pretrain.*``: stage 0 of ``model.init=pooled``); ``eval_batch``."""
    out: dict = {}
    stages = ("meta", "gen_train", "fusion_train", "pretrain")
    for k, v in overrides.items():  # generic first, specific keys win
        head, _, rest = k.partition(".")
        if head == "train" and rest:
            for st in stages:
                out.setdefault(f"{st}.{rest}", v)
    for k, v in overrides.items():
        head, _, rest = k.partition(".")
        if head in ("model", *stages) and rest or k == "eval_batch":
            out[k] = v
        elif head != "train":
            raise MetarecError(f"unknown MML override {k!r}: use model.*, train.*, meta.*, gen_train.*, "
                               "fusion_train.*, pretrain.* or eval_batch")
    return out


def run_variant(variant: str, data, seed: int, out_dir: Path | None = None, progress: bool = True,
                overrides: dict | None = None, cache: dict | None = None, text_encoder=None,
                text_name: str | None = None, device=None) -> dict:
    """Train ``variant`` on ``data`` (a :class:`SeqData`) in the three stages, select on meta-valid, test once.

    ``overrides``: flat keys (see :func:`split_overrides`), e.g. ``{"model.inner.lr": 1e-2, "train.epochs": 2}``.
    ``text_encoder``/``text_name``: inject a text encoder (tests); default all-MiniLM-L6-v2. The network's
    max_len follows the protocol's.
    """
    from metarec.seqrec.evaluate import evaluate_seq, evaluate_seq_detail
    from metarec.seqrec.modality import TEXT_MODEL, item_modalities

    base = MMLRunConfig()
    base = replace(base, model=replace(base.model, net=replace(base.model.net, max_len=data.config.max_len)))
    rc = apply_overrides(base, split_overrides(overrides or {}))
    cfg = variant_config(variant, rc.model)
    feats = {}
    if cfg.use_modalities:
        feats = item_modalities(data.dataset, cfg.modality, text_encoder=text_encoder,
                                text_name=text_name or TEXT_MODEL)
    torch.manual_seed(seed)
    with torch.device("cpu"):  # built on the CPU (the same initial draws on every device), then moved
        model = MMLModel(data.n_items, cfg, pool=torch.from_numpy(trained_items(data.train)), feats=feats)
    model.to(device or "cpu")
    model.name = variant

    def valid_fn(m):
        return evaluate_seq(m, data.valid, data.n_items, rc.eval_batch)

    stages = {k: replace(getattr(rc, k), seed=seed) for k in ("meta", "gen_train", "fusion_train", "pretrain")}
    # what determines each stage (the fusion layer is created after the learners and the generator, so it does
    # not change their initialisation): variants that agree on it share the stage through ``cache``
    data_key = (asdict(data.config), len(data.train), data.n_items, data.dataset.name, seed)

    def learners_key(c: MMLConfig, train: TrainConfig, before: str | None) -> str:
        key = ("mml-stage1", sorted(model.learners), asdict(replace(c.net, fusion="", fusion_hidden=0)),
               asdict(c.modality), c.use_modalities, asdict(c.inner), c.train_mode, asdict(train), data_key)
        if c.train_mode == "maml" and (c.meta_query != 1 or before is not None):  # the options of issue 17
            key += (c.meta_query, before)
        return repr(key)

    pooled = replace(cfg, train_mode="pooled", init="scratch", meta_query=1)
    k0 = learners_key(pooled, stages["pretrain"], None)  # = ptft-mml's stage 1 when the training agrees
    k1 = learners_key(cfg, stages["meta"], k0 if cfg.init == "pooled" else None)
    k2 = repr(("mml-stage2", k1, cfg.gen_k, cfg.gen_p0, cfg.gen_act, cfg.retrieval, asdict(stages["gen_train"])))
    t0 = time.perf_counter()
    record = model.train_stages(data.train, valid_fn, stages, out_dir, progress, cache,
                                {"pretrain": k0, "meta": k1, "gen_train": k2})
    fusion_select = record.pop("fusion_select", None)
    train_s = time.perf_counter() - t0 + sum(v.get("resumed_seconds", 0.0) for v in record.values()
                                            if not v.get("shared"))  # + epochs of resumed processes
    if not writer():  # a rank other than 0 of a multi-process run: rank 0 evaluates and reports
        return {"method": variant, "seed": seed, "test": None}
    valid = valid_fn(model)
    test, by_query = evaluate_seq_detail(model, data.test, data.n_items, rc.eval_batch)
    extra: dict = {"test_by_query": by_query}
    if fusion_select is not None:  # both rules' test numbers, for the report only (the choice was made above)
        chosen = bool(model.ready[1])
        model.ready[1] = not chosen
        other = evaluate_seq(model, data.test, data.n_items, rc.eval_batch)
        model.ready[1] = chosen
        names = ("learned", "average") if chosen else ("average", "learned")
        extra["fusion_select"] = {**fusion_select, "test_ndcg@10": {names[0]: test["ndcg@10"],
                                                                     names[1]: other["ndcg@10"]}}
    history = [{"stage": k, **h} for k, v in record.items() for h in v["history"]]
    result = {"method": variant, "seed": seed, "test": test, "valid": valid, "train_seconds": train_s,
              "best_epoch": record["meta"]["best_epoch"], "history": history, "config": asdict(rc),
              "modalities": model.modalities,
              "stages": {k: {"best_epoch": v["best_epoch"], "seconds": v["seconds"]} for k, v in record.items()},
              **extra}
    if out_dir is not None:
        model.save(Path(out_dir) / "model.pt", extra={"method": variant, "seed": seed,
                                                      "protocol": asdict(data.config), "dataset": data.dataset.name})
    return result
