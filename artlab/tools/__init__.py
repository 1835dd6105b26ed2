"""Tooling around the library, above the science layers: the headless notebook runner (`artlab.tools.notebooks`),
warm notebook kernels (`artlab.tools.warm_kernels`), and the pytest plugin of artlab's own tests
(`artlab.tools.pytest_plugin`)."""
