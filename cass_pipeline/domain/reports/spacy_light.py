"""spaCy, imported light: without torch and without spaCy's own command line.

The rule-based report parser uses spaCy's tokenizer, sentences and matchers only, yet
`import spacy` costs seconds and most of a gigabyte: its thinc imports torch whenever it is
installed (about 1.2 s and 0.6 GB, for neural layers) and spaCy imports its command line
(0.6 s: typer, weasel, requests) to offer `spacy.info`. While spaCy loads, torch is hidden
(thinc then runs without it) and the command line stands in as a stub whose `info` loads the
real one when called; both only when nothing has imported them yet, and afterwards a plain
`import torch` or `import spacy.cli` works as usual.
"""

from __future__ import annotations

import sys
import types


def _info(*args, **kwargs):
    """`spacy.info`, loaded when first called."""
    from spacy.cli.info import info

    return info(*args, **kwargs)


_stand_ins: dict[str, types.ModuleType | None] = {}
if "torch" not in sys.modules:
    _stand_ins["torch"] = None  # `import torch` raises ImportError
if "spacy" not in sys.modules:
    _cli, _cli_info = types.ModuleType("spacy.cli"), types.ModuleType("spacy.cli.info")
    _cli.__path__ = []  # a package, to hold `info`
    _cli_info.info = _info
    _stand_ins.update({"spacy.cli": _cli, "spacy.cli.info": _cli_info})
sys.modules.update(_stand_ins)
try:
    import spacy
    from spacy.language import Language
    from spacy.tokens import Doc, Span
finally:
    for _name in _stand_ins:
        del sys.modules[_name]

__all__ = ["Doc", "Language", "Span", "spacy"]
