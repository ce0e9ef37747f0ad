"""audio tokenizer families; importing this package registers them."""
