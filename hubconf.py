"""torch.hub entrypoints: one per registered zoo model (`torch.hub.list(repo)`; docstrings are the help)."""

dependencies = ["torch", "torchaudio", "safetensors", "yaml"]

import zoo  # noqa: E402

globals().update(zoo.hub_entrypoints())
