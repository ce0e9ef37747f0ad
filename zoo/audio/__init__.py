"""audio tokenizer families; importing this package registers them."""
from zoo.audio import wavtokenizer  # noqa: F401,E402
