"""Tooling around the library, above the science layers: the headless notebook runner (`artlab.tools.notebooks`)."""
