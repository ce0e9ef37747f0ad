"""`scripts/demo.py` (`make demo`): the held-out numbers it prints come from the bundled weights' entries."""

from pathlib import Path

from conftest import load_script

import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_the_heldout_metrics_recorded_with_every_bundled_model():
    demo = load_script(ROOT / "scripts" / "demo.py")
    bundled = [n for n in zoo.list_models("*-tiny") if zoo.get_spec(n).bundled_weights is not None]
    assert "wavtokenizer-tiny" in bundled and "gigatok-tiny" in bundled
    for name in bundled:
        metrics = demo.heldout_metrics(name)
        assert metrics, f"{name}'s bundled weights record no held-out metrics"
        assert all(isinstance(v, float) for v in metrics.values())
    assert demo.heldout_metrics("gigatok-tiny")["psnr_full_photos"] == 21.11
    assert demo.heldout_metrics("flextok-tiny")["psnr_k32"] == 19.12  # nested values flattened
    assert not any("protocol" in k for k in demo.heldout_metrics("gigatok-tiny"))
