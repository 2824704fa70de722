"""Where heavy work runs: in this process (the default, no extra needed) or on a Ray cluster.

``open_engine(settings)`` gives the engine ``ASSAY_ENGINE`` names; training, batch scoring,
drift reports and unlearning retrains hand it their independent pieces of work (a
cross-validation fold, a batch of rows, a feature's drift test) and get the same results
from either engine.
"""
