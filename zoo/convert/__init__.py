"""Official checkpoint -> zoo converters: `zoo/convert/<family>.py`, each a `Converter` registered with
`@register_converter(family)` and imported only when that family's official files are read."""
from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule

__all__ = ["Converter", "KeyMap", "OfficialCheckpoint", "Rule"]
