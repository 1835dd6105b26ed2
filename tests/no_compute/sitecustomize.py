"""Loaded by every Python process started with this folder on PYTHONPATH (the notebooks' kernels in
tests/test_workshop_pack.py): training, forward passes over images, renders, attributions and t-SNE raise."""

import os

if os.environ.get("ARTLAB_REFUSE_COMPUTING"):
    import artlab.features as features

    def _refuse(what: str):
        def refuse(*args, **kwargs):
            raise RuntimeError(f"computed in a notebook shown from a pack: {what}")
        return refuse

    features.forward_pass = _refuse("a forward pass over images")  # before the modules that import it by name
    import sklearn.manifold

    import artlab.interpret.attribution as attribution
    import artlab.interpret.featurevis as featurevis
    import artlab.training.api as api

    api.fit, api.fit_probe = _refuse("training"), _refuse("training a probe")
    attribution._prepare = _refuse("an attribution's forward pass")
    featurevis.optimise = _refuse("a feature visualisation render")
    sklearn.manifold.TSNE.fit_transform = _refuse("t-SNE")
