"""One-shot embedding size search under a memory budget (AdaS&S style).

Pipeline: a weight-sharing embedding supernet (`EmbeddingSizeNet`) trained with a
`WidthSampler` (adaptive or uniform), a REINFORCE search over per-field widths with a
resource-competition penalty (`reinforce_search`), then from-scratch retraining
(`run_search` does all of it). See docs/embedding.md.
"""

from recnas.embedding.budget import penalty, resolve_budget, table_params
from recnas.embedding.config import EmbedSearchConfig
from recnas.embedding.model import EmbeddingSizeNet
from recnas.embedding.pipeline import retrain, run_search, stability
from recnas.embedding.samplers import WidthSampler
from recnas.embedding.search import SearchResult, reinforce_search, repair_to_budget

__all__ = [
    "EmbedSearchConfig", "EmbeddingSizeNet", "SearchResult", "WidthSampler", "penalty", "reinforce_search",
    "repair_to_budget", "resolve_budget", "retrain", "run_search", "stability", "table_params",
]
