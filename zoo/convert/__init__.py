"""Official checkpoint -> zoo converters, one module per family; importing registers them."""
from zoo.convert import flextok  # noqa: F401,E402
from zoo.convert import wavtokenizer  # noqa: F401,E402
from zoo.convert import gigatok  # noqa: F401,E402
