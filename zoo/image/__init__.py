"""Image tokenizer families: each subpackage registers itself (`@register_family`); zoo discovers them."""
