"""Audio tokenizer families: each module registers itself (`@register_family`); zoo discovers them."""
