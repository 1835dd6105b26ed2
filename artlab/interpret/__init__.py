"""Seeing inside a network: feature visualisation, attributions (Captum) and a map of the collection."""
