"""Helpers shared by the models, the data pipeline and the engine."""
