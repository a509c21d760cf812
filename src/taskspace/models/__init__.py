"""Loading causal LMs (and, in :mod:`taskspace.models.pretrain`, training them from scratch)."""
from .loading import LoadedModel, list_revisions, load_model

__all__ = ["LoadedModel", "load_model", "list_revisions"]
