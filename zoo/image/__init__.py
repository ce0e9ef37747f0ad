"""image tokenizer families; importing this package registers them."""
from zoo.image import flextok  # noqa: F401,E402
from zoo.image import gigatok  # noqa: F401,E402
