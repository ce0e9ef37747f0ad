"""zoo: one interface over multimodal discrete tokenizers (image, audio, face).

    import zoo
    zoo.list_models("*")
    tok = zoo.load("wavtokenizer-tiny")
    tokens = tok.encode(x)
    y = tok.decode(tokens)
"""

__version__ = "0.1.0"

from zoo.api import (  # noqa: E402
    AudioTokenizer,
    Codebook,
    FaceTokenizer,
    ForwardOutput,
    ImageTokenizer,
    Tokenizer,
    Tokens,
)
from zoo.registry import (  # noqa: E402
    create,
    from_official,
    get_spec,
    list_families,
    list_models,
    load,
    register_converter,
    register_family,
    register_model,
)
from zoo.hub import hub_entrypoints  # noqa: E402

__all__ = [
    "AudioTokenizer",
    "Codebook",
    "FaceTokenizer",
    "ForwardOutput",
    "ImageTokenizer",
    "Tokenizer",
    "Tokens",
    "create",
    "from_official",
    "get_spec",
    "hub_entrypoints",
    "list_families",
    "list_models",
    "load",
    "register_converter",
    "register_family",
    "register_model",
]
