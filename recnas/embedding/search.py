"""REINFORCE over per-field embedding widths, scored with inherited supernet weights.

Policy: independent categoricals, one per field over the candidate widths (logits [F, K],
uniform at start). Each iteration draws `samples_per_iter` configurations and scores each:

    reward = -logloss_val(config; supernet weights) - penalty_weight * max(0, params / budget - 1)

with params = sum_i vocab_i * w_i. The policy-gradient step uses advantage = reward - b,
b a moving average of past mean rewards (the first iteration uses its own mean), plus a
small entropy bonus. The result is the policy's per-field argmax, *repaired* to the budget:
while over it, step down the field whose next smaller width costs the least policy
log-probability per parameter saved. So the answer is always within budget. A stochastic
policy keeps slack under the budget (exploring near it is penalised), so a final greedy
`refine` spends what is left: one-step width increases that fit and lower the score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from recnas.embedding.budget import penalty, table_params
from recnas.embedding.config import SearchSettings


@dataclass
class SearchResult:
    widths: list[int]
    params: int
    probs: list[list[float]]  # final policy, [F, K]
    history: list[dict] = field(default_factory=list)  # per iteration: mean reward, loss, params


def repair_to_budget(widths: Sequence[int], choices: Sequence[int], log_probs: np.ndarray, vocab_sizes: Sequence[int], budget: int) -> list[int]:
    """Shrink widths (least policy regret per parameter first) until the tables fit `budget`."""
    idx = [list(choices).index(w) for w in widths]
    while table_params(vocab_sizes, [choices[k] for k in idx]) > budget:
        best, best_cost = None, (np.inf, 0)
        for f, k in enumerate(idx):
            if k == 0:
                continue
            saved = vocab_sizes[f] * (choices[k] - choices[k - 1])
            cost = ((log_probs[f, k] - log_probs[f, k - 1]) / saved, -saved)  # ties: save the most
            if cost < best_cost:
                best, best_cost = f, cost
        if best is None:  # every field at the smallest width: the caller checked feasibility
            raise ValueError("budget is below the smallest configuration")
        idx[best] -= 1
    return [choices[k] for k in idx]


def refine(widths: Sequence[int], score: Callable[[list[int]], float], choices: Sequence[int], vocab_sizes: Sequence[int], budget: int) -> list[int]:
    """Hill-climb on leftover budget: apply the best single-field step up while it fits and helps."""
    widths, current = list(widths), float(score(list(widths)))
    while True:
        best, best_loss = None, current
        for f, w in enumerate(widths):
            k = list(choices).index(w)
            if k + 1 == len(choices):
                continue
            trial = widths[:f] + [choices[k + 1]] + widths[f + 1 :]
            if table_params(vocab_sizes, trial) <= budget:
                loss = float(score(trial))
                if loss < best_loss:
                    best, best_loss = trial, loss
        if best is None:
            return widths
        widths, current = best, best_loss


def reinforce_search(
    score: Callable[[list[int]], float],
    vocab_sizes: Sequence[int],
    choices: Sequence[int],
    budget: int,
    cfg: SearchSettings,
    seed: int = 0,
    progress: Callable[[int, dict], None] | None = None,
) -> SearchResult:
    """Run the search; `score(widths)` returns the validation log loss of a configuration."""
    n_fields, n_choices = len(vocab_sizes), len(choices)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.zeros(n_fields, n_choices, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=cfg.policy_lr)
    baseline, history = None, []
    for it in range(cfg.iterations):
        probs = torch.softmax(logits, 1)
        picks = torch.multinomial(probs.detach(), cfg.samples_per_iter, replacement=True, generator=gen).T  # [M, F]
        rewards, losses, sizes = [], [], []
        for pick in picks.tolist():
            widths = [choices[k] for k in pick]
            params = table_params(vocab_sizes, widths)
            loss = float(score(widths))
            rewards.append(-loss - penalty(params, budget, cfg.penalty_weight))
            losses.append(loss)
            sizes.append(params)
        r = torch.tensor(rewards)
        b = float(r.mean()) if baseline is None else baseline
        log_p = torch.log_softmax(logits, 1)
        chosen = log_p.gather(1, picks.T).sum(0)  # [M] log-prob of each configuration
        entropy = -(probs * log_p).sum()
        objective = ((r - b) * chosen).mean() + cfg.entropy_coef * entropy
        opt.zero_grad()
        (-objective).backward()
        opt.step()
        baseline = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(r.mean())
        entry = {"iteration": it + 1, "reward": float(r.mean()), "logloss": float(np.mean(losses)), "params": float(np.mean(sizes)), "baseline": baseline}
        history.append(entry)
        if progress is not None:
            progress(it + 1, entry)
    log_p = torch.log_softmax(logits.detach(), 1).numpy()
    greedy = [choices[k] for k in log_p.argmax(1)]
    widths = refine(repair_to_budget(greedy, choices, log_p, vocab_sizes, budget), score, choices, vocab_sizes, budget)
    return SearchResult(widths, table_params(vocab_sizes, widths), np.exp(log_p).round(4).tolist(), history)
