"""Official checkpoint -> zoo converters, one module per family; importing registers them."""
