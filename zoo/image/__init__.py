"""image tokenizer families; importing this package registers them."""
