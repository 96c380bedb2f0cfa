"""Metrics of mtmoe: plasticity probes, expert usage, non-stationarity and aggregates.

Pure functions (no training state); each module's docstring states its formulas.
"""

from .aggregate import (AGGREGATES, interval_estimates, iqm_ci, min_max_normalize,
                        probability_of_improvement)
from .nonstationarity import (forgetting, gradient_cosine, mean_gradient_cosine, mean_of,
                              per_task_gradients, steps_to_recover, switch_drop)
from .plasticity import (DEFAULT_TAUS, dormant_ratio, dormant_ratio_layers, feature_norm,
                         grad_norms, neuron_scores, srank, weight_norms)
from .routing import expert_load_entropy, mutual_information, task_expert_mutual_information

__all__ = [
    "AGGREGATES", "interval_estimates", "iqm_ci", "min_max_normalize", "probability_of_improvement",
    "forgetting", "gradient_cosine", "mean_gradient_cosine", "mean_of", "per_task_gradients",
    "steps_to_recover", "switch_drop",
    "DEFAULT_TAUS", "dormant_ratio", "dormant_ratio_layers", "feature_norm", "grad_norms",
    "neuron_scores", "srank", "weight_norms",
    "expert_load_entropy", "mutual_information", "task_expert_mutual_information",
]
