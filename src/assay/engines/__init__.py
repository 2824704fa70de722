"""Where heavy work runs: in this process (the default, no extra needed) or on a Ray cluster.

``open_engine(name, address)`` gives the engine the ``ASSAY_ENGINE`` setting names. Training
(and the full retrain of a forgetting) hands it the candidates' cross-validation folds and the
search's trials, batch scoring the batches of a Parquet folder; either engine gives the same
results.
"""
