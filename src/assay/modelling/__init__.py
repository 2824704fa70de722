"""Modelling: model specs, data sets, training of candidate models, evaluation and model cards."""
