"""The language model side: a byte-level BPE tokenizer trained on the pool, token streams of a training set,
a small GPT-style decoder from ``transformers`` trained from scratch in a LightningModule, and the evaluation
(per-domain held-out perplexity and a 4-way multiple-choice continuation task)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from experiments.kit.cache import cache_path

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"


# ----------------------------------------------------------------------------------------------------------------
# tokenizer

def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int = 2):
    """Byte-level BPE (GPT-2 style) trained on ``texts``; ``<|endoftext|>`` is id 0 and separates documents."""
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
                            show_progress=False)
    return tok


def cached_tokenizer(texts: list[str], data_key: str, vocab_size: int, cache_dir: Path):
    from tokenizers import Tokenizer
    path = cache_path(cache_dir, "tokenizers", {"data": data_key, "vocab_size": vocab_size, "kind": "byte-level-bpe"},
                      ".json", prefix="text-")
    if path.exists():
        return Tokenizer.from_file(str(path))
    start = time.perf_counter()
    tok = train_tokenizer(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    log.info("trained a byte-level BPE tokenizer (vocab %d) in %.1f s", vocab_size, time.perf_counter() - start)
    return Tokenizer.from_file(str(path))


def encode(tokenizer, texts: list[str], max_tokens: int | None = None) -> list[np.ndarray]:
    """Token ids of every text (int32), optionally truncated to ``max_tokens``."""
    out = []
    for enc in tokenizer.encode_batch(texts):
        ids = np.asarray(enc.ids, dtype=np.int32)
        out.append(ids[:max_tokens] if max_tokens else ids)
    return out


def eot_id(tokenizer) -> int:
    return tokenizer.token_to_id(EOT)


# ----------------------------------------------------------------------------------------------------------------
# training data: one token stream per variant, random windows

def take_budget(order: np.ndarray, n_tokens: np.ndarray, budget: int) -> np.ndarray:
    """The shortest prefix of ``order`` (pool rows) whose documents hold at least ``budget`` tokens.

    Raises ValueError when all of ``order`` holds fewer."""
    cum = np.cumsum(n_tokens[order])
    if cum.size == 0 or cum[-1] < budget:
        raise ValueError(f"the selection holds {int(cum[-1]) if cum.size else 0} tokens, fewer than the "
                         f"budget of {budget}")
    return order[: int(np.searchsorted(cum, budget)) + 1]


def token_stream(docs: list[np.ndarray], eot: int, budget: int | None = None) -> np.ndarray:
    """Documents joined as ``<eot> doc <eot> doc ...``, cut to ``budget`` tokens: (n,) int32."""
    parts = []
    for d in docs:
        parts.append(np.array([eot], dtype=np.int32))
        parts.append(d)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return stream[:budget] if budget else stream


class WindowDataset(Dataset):
    """``n`` random windows of ``context + 1`` tokens from a stream, starts drawn once from ``seed``."""

    def __init__(self, stream: np.ndarray, context: int, n: int, seed: int):
        if len(stream) < context + 2:
            raise ValueError(f"token stream of {len(stream)} tokens is shorter than one window ({context + 1})")
        self.stream = torch.from_numpy(stream.astype(np.int64))
        self.context = context
        rng = np.random.default_rng([seed, 17])
        self.starts = rng.integers(0, len(stream) - context - 1, size=n)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):
        s = int(self.starts[i])
        return self.stream[s:s + self.context + 1]


class EvalDataset(Dataset):
    """Held-out documents as ``<eot> doc`` (first ``context + 1`` tokens), padded; with the domain index."""

    def __init__(self, docs: list[np.ndarray], domain_ids: np.ndarray, eot: int, context: int):
        self.items = []
        for d, dom in zip(docs, domain_ids):
            ids = np.concatenate([[eot], d])[: context + 1].astype(np.int64)
            self.items.append((ids, int(dom)))
        self.context = context

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        ids, dom = self.items[i]
        x = np.zeros(self.context + 1, dtype=np.int64)
        mask = np.zeros(self.context + 1, dtype=bool)
        x[:len(ids)] = ids
        mask[1:len(ids)] = True  # positions whose token is predicted
        return torch.from_numpy(x), torch.from_numpy(mask), dom


# ----------------------------------------------------------------------------------------------------------------
# model

def build_model(cfg, vocab_size: int):
    """A decoder-only transformer from ``transformers``, configured by ``cfg`` (``configs/model/*.yaml``),
    initialised at random (trained from scratch)."""
    import transformers
    if cfg.arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab_size, n_positions=cfg.context, n_embd=cfg.d_model, n_layer=cfg.n_layers,
            n_head=cfg.n_heads, n_inner=cfg.d_model * cfg.mlp_ratio, resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=0, eos_token_id=0,
            tie_word_embeddings=True)
        return transformers.GPT2LMHeadModel(config)
    if cfg.arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_model * cfg.mlp_ratio,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, max_position_embeddings=cfg.context,
            bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
        return transformers.LlamaForCausalLM(config)
    raise ValueError(f"model.arch must be 'gpt2' or 'llama', got {cfg.arch!r}")


def token_nll(model, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of every next token: x (B, T+1) -> (B, T)."""
    logits = model(input_ids=x[:, :-1]).logits  # (B, T, V)
    b, t, v = logits.shape
    # rows of (B*T, V): the contiguous layout cross_entropy is fastest on (vs (B, V, T))
    return torch.nn.functional.cross_entropy(logits.reshape(b * t, v).float(), x[:, 1:].reshape(b * t),
                                             reduction="none").view(b, t)


class CausalLM(pl.LightningModule):
    """Trains the decoder on random windows; validation reports per-domain held-out perplexity."""

    def __init__(self, model_cfg, optim_cfg, vocab_size: int, domains: list[str], macro_domains: list[str],
                 total_steps: int):
        super().__init__()
        self.model = build_model(model_cfg, vocab_size)
        self.optim_cfg = optim_cfg
        self.domains = list(domains)
        self.macro_domains = list(macro_domains)
        self.total_steps = total_steps
        self.history: list[dict] = []  # learning curve: {"step", "train_loss", "val_ppl_<domain>", ...}
        self._val = None
        self._train_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = token_nll(self.model, batch).mean()
        self._train_losses.append(float(loss.detach()))
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self):
        n = len(self.domains)
        self._val = (torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64))

    def validation_step(self, batch, batch_idx):
        x, mask, dom = batch
        nll = token_nll(self.model, x) * mask[:, 1:]
        sums, counts = self._val
        sums.index_add_(0, dom.cpu(), nll.sum(1).double().cpu())
        counts.index_add_(0, dom.cpu(), mask[:, 1:].sum(1).double().cpu())

    def on_validation_epoch_end(self):
        sums, counts = self._val
        ppl = {d: math.exp(float(sums[i] / counts[i])) for i, d in enumerate(self.domains) if counts[i] > 0}
        metrics = {f"val_ppl_{d}": v for d, v in ppl.items()}
        metrics["val_ppl_macro"] = float(np.mean([ppl[d] for d in self.macro_domains if d in ppl]))
        if self.trainer.sanity_checking:
            return
        step = int(self.global_step)
        recent = self._train_losses[-20:]
        self.history.append({"step": step, "train_loss": float(np.mean(recent)) if recent else float("nan"),
                             **metrics})
        self.log_dict(metrics, prog_bar=False)

    def configure_optimizers(self):
        c = self.optim_cfg
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, betas=tuple(c.betas))
        warmup = max(1, int(c.warmup_fraction * self.total_steps))

        def schedule(step):  # linear warm-up, cosine decay to min_lr_ratio
            if step < warmup:
                return (step + 1) / warmup
            t = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
            return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ----------------------------------------------------------------------------------------------------------------
# evaluation

@torch.inference_mode()
def domain_perplexity(model, loader, domains: list[str]) -> dict[str, float]:
    """exp(mean NLL per token) of the held-out documents of every domain."""
    model.eval()
    sums = np.zeros(len(domains))
    counts = np.zeros(len(domains))
    for x, mask, dom in loader:
        nll = (token_nll(model, x) * mask[:, 1:]).sum(1).double().numpy()
        np.add.at(sums, dom.numpy(), nll)
        np.add.at(counts, dom.numpy(), mask[:, 1:].sum(1).numpy())
    return {d: float(math.exp(sums[i] / counts[i])) for i, d in enumerate(domains) if counts[i] > 0}


def build_mc_items(docs: list[np.ndarray], domain_ids: np.ndarray, prefix: int, cont: int, n_choices: int,
                   per_domain: int, rng: np.random.Generator) -> list[dict]:
    """4-way continuation items: the first ``prefix`` tokens of a held-out document, its true next ``cont``
    tokens, and ``n_choices - 1`` distractor spans from the same positions of other documents of the same
    domain. Answer positions are shuffled."""
    items = []
    long_enough = np.array([len(d) >= prefix + cont for d in docs])
    for dom in np.unique(domain_ids):
        pool = np.flatnonzero((domain_ids == dom) & long_enough)
        if len(pool) < n_choices:
            continue
        chosen = rng.permutation(pool)[:per_domain]
        for i in chosen:
            others = rng.choice(pool[pool != i], size=n_choices - 1, replace=False)
            options = [docs[i][prefix:prefix + cont]] + [docs[j][prefix:prefix + cont] for j in others]
            perm = rng.permutation(n_choices)
            items.append({"prefix": docs[i][:prefix], "options": [options[p] for p in perm],
                          "answer": int(np.flatnonzero(perm == 0)[0]), "domain": int(dom)})
    return items


@torch.inference_mode()
def mc_accuracy(model, items: list[dict], eot: int, batch_size: int = 64) -> tuple[float, dict[int, float]]:
    """Zero-shot accuracy: the option with the highest summed log-likelihood given the prefix is the answer.
    Returns (overall accuracy, {domain id: accuracy})."""
    model.eval()
    rows, meta = [], []
    for k, it in enumerate(items):
        for j, opt in enumerate(it["options"]):
            rows.append(np.concatenate([[eot], it["prefix"], opt]).astype(np.int64))
            meta.append((k, j, len(it["prefix"]) + 1))
    scores = np.zeros((len(items), len(items[0]["options"]) if items else 0))
    for b in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.stack(rows[b:b + batch_size]))
        nll = token_nll(model, x).numpy()  # (B, T)
        for r, (k, j, start) in enumerate(meta[b:b + batch_size]):
            scores[k, j] = -nll[r, start - 1:].sum()  # tokens after the prefix
    correct = scores.argmax(1) == np.array([it["answer"] for it in items])
    doms = np.array([it["domain"] for it in items])
    per = {int(d): float(correct[doms == d].mean()) for d in np.unique(doms)}
    return float(correct.mean()) if len(items) else float("nan"), per


def collate_eval(batch):
    x = torch.stack([b[0] for b in batch])
    m = torch.stack([b[1] for b in batch])
    d = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return x, m, d


def eval_loader(dataset: EvalDataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_eval)
