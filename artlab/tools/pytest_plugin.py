"""A pytest plugin for artlab's own tests, loaded before the installed plugins (`-p` in pyproject.toml's addopts):
nbval's plugin imports nbformat, and with it jsonschema, in every pytest process (the main one and each worker);
importing jsonschema artlab's way first skips the 1 s its optional IRI checker spends compiling grammars
(`artlab.lazy.import_jsonschema`)."""

from artlab.lazy import import_jsonschema

import_jsonschema()
