"""TEASER: official-fixture parity through `zoo.from_official`, FLAME from official-format files (restricted
unpickling), the pure-torch rasteriser against a brute-force reference, OpenCV-exact hull masks, the contract words,
the identity swap / expression transfer, the converter's refusals and the face crop."""

from __future__ import annotations

import copyreg
import hashlib
import io
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import torch
from conftest import fixture_path, needs_official_fixture

import zoo
from zoo.face.flame_files import FaceModelFileError, read_face_model
from zoo.face.render import (
    FaceRenderer,
    directional_shading,
    face_hull_mask,
    interpolate,
    rasterize,
    subset_faces,
    vertex_normals,
)
from zoo.face.safe_pickle import UnsafePickleError, load_pickle
from zoo.face.teaser import swap_appearance, transfer_expression
from zoo.face.teaser.slots import ContinuousTokensError

FIXTURE = fixture_path("teaser")
needs_fixture = needs_official_fixture("teaser", "teaser_fixture.pt", "io.safetensors", "flame_synthetic.safetensors")
GEOMETRY = ("pose_params", "cam", "shape_params", "expression_params", "eyelid_params", "jaw_params")


def _io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "io.safetensors"))


def _flame_file() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "flame_synthetic.safetensors"))


@pytest.fixture(scope="module")
def official():
    if not (FIXTURE / "teaser_fixture.pt").exists():
        pytest.skip(f"official teaser fixture not found at {FIXTURE} (set ZOO_SHARED to the shared/ folder)")
    return zoo.from_official("teaser", checkpoint=FIXTURE / "teaser_fixture.pt",
                             flame=FIXTURE / "flame_synthetic.safetensors")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return zoo.load("teaser-tiny", weights=None)


# -- official parity ----------------------------------------------------------------------------------------------
@needs_fixture
def test_encoder_and_tokens_match_the_official_code(official):
    ref = _io()
    with torch.inference_mode():
        tokens = official.encode(ref["img_u8"].float() / 255)
    for key in GEOMETRY:
        assert (tokens.meta[key] - ref[key]).abs().max() < 1e-5, key
    # batch-major [B, 4, T]; the official tensor is (4, B, T) with token 0 the coarsest
    assert tokens.meta["tokens"].shape == (4, 4, 16)
    assert (tokens.meta["tokens"] - ref["token"].permute(1, 0, 2)).abs().max() < 1e-5
    assert official.config["backbone_multiplier"] == 0.25 and official.config["token_dim"] == 16


@needs_fixture
def test_masking_shading_and_generator_match_the_official_code(official):
    ref = _io()
    image = ref["img_u8"][:2].float() / 255
    rendered = ref["rendered_u8"].float() / 255
    masked, keep = official.masked_input(image, rendered, hull_points=ref["landmarks"])
    assert torch.equal(face_hull_mask(ref["landmarks"]).to(torch.uint8), ref["hull_mask"])
    assert torch.equal(keep.to(torch.uint8), ref["final_mask"])
    assert torch.equal(masked, image * ref["final_mask"].float())
    assert (directional_shading(ref["shading_normals"]) - ref["shading_out"]).abs().max() < 1e-6
    with torch.inference_mode():
        tokens = official.encode(ref["img_u8"].float() / 255)[:2]
        out = official.generate(tokens, rendered=rendered, masked=masked)
    assert out.shape == (2, 3, 224, 224)
    assert (out - ref["gen_out"]).abs().max() < 5e-5


@needs_fixture
def test_flame_and_projection_match_the_official_code(official):
    ref = _flame_file()
    params = {k[3:]: v for k, v in ref.items() if k.startswith("in.")}
    with torch.inference_mode():
        out = official.flame(params)
        drawn = official.render(params)
        no_lids = official.flame({k: v for k, v in params.items() if k != "eyelid_params"})
    for key in ("vertices", "landmarks_fan", "landmarks_fan_3d", "landmarks_mp"):
        assert (out[key] - ref[f"out.{key}"]).abs().max() < 1e-6, key
    assert (no_lids["vertices"] - ref["out.vertices_no_eyelid"]).abs().max() < 1e-6
    flame = official.load_face_model().flame
    pose = torch.cat([params["pose_params"], torch.zeros(4, 3), params["jaw_params"], torch.zeros(4, 6)], 1)
    assert flame.contour_rows(pose).tolist() == ref["out.dynamic_lmk_row"].tolist()
    assert (drawn["transformed_vertices"] - ref["out.transformed_vertices"]).abs().max() < 1e-5
    for key in ("landmarks_fan", "landmarks_mp"):
        assert (drawn[key] - ref[f"out.transformed_{key}"]).abs().max() < 1e-5
    faces = subset_faces(ref["model.f"], ref["face_mask"])
    assert torch.equal(faces, ref["out.render_faces"])
    normals = vertex_normals(ref["out.vertices"][:, torch.unique(ref["face_mask"])], faces)
    assert (normals - ref["out.render_vertex_normals"]).abs().max() < 1e-5
    assert (normals[:, faces] - ref["out.render_face_normals"]).abs().max() < 1e-5


@needs_fixture
def test_decode_is_the_official_chain(official):
    ref = _io()
    image = ref["img_u8"][:2].float() / 255
    with torch.inference_mode():
        tokens = official.encode(image, hull_points=ref["landmarks"])
        drawn = official.render(tokens)
        masked, _ = official.masked_input(image, drawn["image"], ref["landmarks"])
        manual = official.generate(tokens, rendered=drawn["image"], masked=masked)
        assert torch.equal(official.decode(tokens, image=image), manual)
        assert torch.equal(official.reconstruct(image, hull_points=ref["landmarks"]), manual.clamp(0, 1))
    assert drawn["image"].shape == (2, 3, 224, 224) and drawn["mask"].shape == (2, 1, 224, 224)
    assert drawn["image"].min() >= 0 and drawn["image"].max() <= 0.81


# -- FLAME from the official file formats ---------------------------------------------------------------------------
class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with bytes as Python-2 `str` (BINSTRING): what a Python-2 cPickle writes."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str


def _py2_pickle(build, protocol: int = 2) -> bytes:
    """Pickle `build(Ch)` where `Ch` poses as `chumpy.ch.Ch` (it pickles its `__dict__`, as chumpy does)."""
    module = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.__dict__.update(x=np.asarray(x, np.float64), _dirty_vars=set(), _itr=None, _depends_on_deps={})

        def __reduce_ex__(self, proto):
            if proto >= 2:
                return copyreg.__newobj__, (type(self),), dict(self.__dict__)
            return copyreg._reconstructor, (type(self), object, None), dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), module
    try:
        buffer = io.BytesIO()
        _Py2Pickler(buffer, protocol=protocol, fix_imports=True).dump(build(Ch))
        return buffer.getvalue()
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def _official_assets(folder, arrays: dict, protocol: int = 2):
    """A FLAME-format model written in the official formats: TEASER's assets/ layout."""
    import scipy.sparse

    n = {k: np.asarray(v) for k, v in arrays.items()}
    (folder / "FLAME2020").mkdir(parents=True)
    (folder / "mediapipe_landmark_embedding").mkdir()
    (folder / "FLAME_masks").mkdir()
    sparse = scipy.sparse.csc_matrix(n["model.J_regressor"])
    (folder / "FLAME2020" / "generic_model.pkl").write_bytes(_py2_pickle(lambda Ch: {
        "f": n["model.f"].astype(np.uint32), "v_template": n["model.v_template"],
        "shapedirs": Ch(n["model.shapedirs"]), "posedirs": n["model.posedirs"], "J_regressor": sparse,
        "kintree_table": n["model.kintree_table"], "weights": n["model.weights"], "bs_style": "lbs",
        "J": Ch(np.zeros((5, 3)))}, protocol))
    lmk = {k[4:]: n[k] for k in n if k.startswith("lmk.")}
    lmk["dynamic_lmk_faces_idx"] = torch.from_numpy(lmk["dynamic_lmk_faces_idx"])  # torch tensors, as the real file
    lmk["dynamic_lmk_bary_coords"] = torch.from_numpy(lmk["dynamic_lmk_bary_coords"])
    np.save(folder / "landmark_embedding.npy", np.array(lmk, dtype=object), allow_pickle=True)
    np.save(folder / "l_eyelid.npy", n["l_eyelid"])
    np.save(folder / "r_eyelid.npy", n["r_eyelid"])
    np.savez(folder / "mediapipe_landmark_embedding" / "mediapipe_landmark_embedding.npz",
             lmk_face_idx=n["mp.lmk_face_idx"].astype(np.uint32), lmk_b_coords=n["mp.lmk_b_coords"],
             landmark_indices=n.get("mp.landmark_indices", np.arange(len(n["mp.lmk_face_idx"]))))
    (folder / "FLAME_masks" / "FLAME_masks.pkl").write_bytes(
        _py2_pickle(lambda Ch: {"face": n["face_mask"], "lips": n["face_mask"][:4]}))


@needs_fixture
@pytest.mark.parametrize("protocol", [2, 0])
def test_official_flame_files_are_read_without_chumpy_and_give_the_official_outputs(tmp_path, protocol):
    from zoo.face.flame import FLAME

    ref = _flame_file()
    _official_assets(tmp_path / "assets", {k: v.numpy() for k, v in ref.items()}, protocol)
    assert "chumpy" not in sys.modules
    arrays, _ = read_face_model(tmp_path / "assets")
    assert "chumpy" not in sys.modules
    assert np.array_equal(arrays["model.J_regressor"], ref["model.J_regressor"].numpy())
    assert np.array_equal(arrays["masks.lips"], ref["face_mask"][:4].numpy())
    # the .pkl alone, companions found one folder up (the official assets/FLAME2020/ layout)
    params = {k[3:]: v for k, v in ref.items() if k.startswith("in.")}
    for source in (tmp_path / "assets", tmp_path / "assets" / "FLAME2020" / "generic_model.pkl"):
        flame = FLAME.from_file(source)
        out = flame(params)
        assert (out["vertices"] - ref["out.vertices"]).abs().max() < 1e-6
        assert (out["landmarks_fan"] - ref["out.landmarks_fan"]).abs().max() < 1e-6
    if protocol == 2:  # through the public API: config = the assets folder, flame = a .pkl kept elsewhere
        elsewhere = tmp_path / "FLAME2020.pkl"
        (tmp_path / "assets" / "FLAME2020" / "generic_model.pkl").rename(elsewhere)
        tok = zoo.from_official("teaser", checkpoint=FIXTURE / "teaser_fixture.pt", config=tmp_path / "assets",
                                flame=elsewhere)
        assert tok.config["face_model"] == str(elsewhere)
        assert tok.config["face_model_assets"] == str(tmp_path / "assets")
        with torch.inference_mode():
            assert (tok.flame(params)["landmarks_mp"] - ref["out.landmarks_mp"]).abs().max() < 1e-6


def test_pickles_naming_anything_else_are_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    from zoo.face.standin import stand_in_face_model

    _official_assets(tmp_path / "assets", stand_in_face_model())
    evil = tmp_path / "assets" / "FLAME2020" / "generic_model.pkl"
    evil.write_bytes(pickle.dumps({"f": Exploit()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="builtins.open|io.open"):
        load_pickle(evil)
    with pytest.raises(UnsafePickleError, match="never runs pickled code"):
        read_face_model(tmp_path / "assets")
    assert not marker.exists()


def test_missing_face_model_files_say_where_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(FaceModelFileError, match="flame.is.tue.mpg.de"):
        read_face_model(tmp_path / "FLAME2020" / "generic_model.pkl")
    with pytest.raises(FaceModelFileError, match="generic_model.pkl"):
        read_face_model(tmp_path)  # an assets folder without FLAME
    (tmp_path / "generic_model.pkl").write_bytes(b"")
    with pytest.raises(FaceModelFileError, match="landmark_embedding.npy.*Pixel-Talk/TEASER"):
        read_face_model(tmp_path / "generic_model.pkl")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_FLAME", raising=False)
    tok = zoo.load("teaser-tiny", weights=None, face_model=None)
    x = tok.example_input(1, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = tok.encode(x)  # encoding needs no face model
        with pytest.raises(FaceModelFileError, match="ZOO_FLAME"):
            tok.decode(tokens)


def test_face_model_files_round_trip_and_are_checked(tmp_path):
    from zoo.face.flame_files import save_face_model
    from zoo.face.standin import stand_in_face_model

    arrays = stand_in_face_model()
    path = save_face_model(arrays, tmp_path / "face.safetensors", {"note": "stand-in"})
    back, meta = read_face_model(path)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays) and meta["note"] == "stand-in"
    broken = dict(arrays, l_eyelid=arrays["l_eyelid"][:5])
    with pytest.raises(ValueError, match="l_eyelid has shape"):
        save_face_model(broken, tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match="lacks"):
        save_face_model({k: v for k, v in arrays.items() if k != "face_mask"}, tmp_path / "b.safetensors")


# -- the rasteriser against a brute-force reference -----------------------------------------------------------------
def _brute_force(screen: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Per pixel, per face, in float64: barycentrics by solving the 2x2 system; nearest covering face wins."""
    face_of = -np.ones((height, width), dtype=np.int64)
    bary = np.zeros((height, width, 3))
    margin = np.full((height, width), np.inf)  # how close the decision was (to skip knife-edge pixels)
    for i in range(height):
        for j in range(width):
            p = np.array([(2 * j + 1) / width - 1, (2 * i + 1) / height - 1])
            best = np.inf
            for f, (a, b, c) in enumerate(faces):
                m = np.array([screen[a, :2] - screen[c, :2], screen[b, :2] - screen[c, :2]]).T
                if abs(np.linalg.det(m)) < 1e-12:
                    continue
                w0, w1 = np.linalg.solve(m, p - screen[c, :2])
                w = np.array([w0, w1, 1 - w0 - w1])
                margin[i, j] = min(margin[i, j], np.abs(w).min())
                depth = w @ screen[[a, b, c], 2]
                if (w > 0).all() and depth >= 0:
                    margin[i, j] = min(margin[i, j], abs(depth - best)) if np.isfinite(best) else margin[i, j]
                    if depth < best:
                        best, face_of[i, j], bary[i, j] = depth, f, w
    return face_of, bary, margin


def test_rasteriser_matches_a_brute_force_reference():
    gen = torch.Generator().manual_seed(3)
    height, width = 23, 31  # non-square, odd
    screen = torch.rand(2, 14, 3, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    screen[..., 2] = torch.rand(2, 14, generator=gen, dtype=torch.float64) * 3
    faces = torch.randint(0, 14, (12, 3), generator=gen)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    frags = rasterize(screen, faces, height, width)
    compared = 0
    for b in range(2):
        face_of, bary, margin = _brute_force(screen[b].numpy(), faces.numpy(), height, width)
        clear = margin > 1e-6
        assert clear.mean() > 0.95
        assert np.array_equal(frags.pix_to_face[b].numpy()[clear], face_of[clear])
        covered = clear & (face_of >= 0)
        assert np.abs(frags.bary[b].numpy()[covered] - bary[covered]).max() < 1e-5
        compared += covered.sum()
    assert compared > 100  # the test meshes really cover pixels, with overlaps
    # attribute interpolation = the barycentric mix of the winner's corner values
    values = torch.rand(2, faces.shape[0], 3, 2, generator=gen, dtype=torch.float64)
    image = interpolate(frags, values)
    b, i, j = (frags.pix_to_face >= 0).nonzero()[0].tolist()
    f = frags.pix_to_face[b, i, j]
    assert torch.allclose(image[b, :, i, j], (frags.bary[b, i, j, :, None] * values[b, f]).sum(0))
    assert (image[(frags.pix_to_face < 0)[:, None].expand_as(image)] == 0).all()


def test_rendering_is_differentiable_where_it_should_be():
    from zoo.face.standin import stand_in_face_model

    arrays = stand_in_face_model(rings=8, segments=12)
    renderer = FaceRenderer(torch.as_tensor(arrays["model.f"]), torch.as_tensor(arrays["face_mask"]), 32)
    verts = torch.as_tensor(arrays["model.v_template"], dtype=torch.float64)[None].clone()
    cam = torch.tensor([[7.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    verts.requires_grad_(True)
    out = renderer(verts, cam)
    assert 0.2 < out["mask"].mean() < 0.9
    out["image"].sum().backward()
    assert verts.grad.abs().sum() > 0 and cam.grad.abs().sum() > 0

    base = verts.detach()
    picked = torch.unique(renderer.faces[:12].flatten())[:8]  # vertices of some drawn faces

    def covered_pixels(moved, c):  # coverage is fixed for these tiny steps: gradcheck the smooth part
        v = base.index_put((torch.zeros_like(picked), picked), base[0, picked] + moved)
        return renderer(v, c)["image"][..., 8:24, 8:24]

    moved = torch.zeros(len(picked), 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(covered_pixels, (moved, cam.detach().requires_grad_()), eps=1e-7, atol=1e-4,
                                    fast_mode=True)


# -- the hull mask is OpenCV's ---------------------------------------------------------------------------------------
# sha256[:16] of cv2.fillConvexPoly(ones, cv2.convexHull(points.astype(int32)), 0) (opencv 4.11) for `_hull_cases()`
CV2_DIGESTS = [
    "b535b1842d72a7e1", "bd8f6cebdb7a0adf", "8df5e1287afc9c3d", "b3c6126cb082b788", "39af48b33d63d2f7",
    "b4305c1947e994d7", "ab5d4cb6525dbff9", "a3ec67a281c4b4e2", "e96f5778b2bc4120", "88721733d45e39d7",
    "9033cac046afd266", "9f726e1eae8b9945", "69d25f996a7424d9", "277d4aea596a7bc4", "b8914ae3335749bf",
    "dc1b601d804de04d", "b54d0a777c6301a2", "4af2eb464748a5d3", "bfa960e423e7ce39", "c67615c5502c097a",
    "aa0d57b59ec7746d", "5b2eb3320fc4f483", "336789347607baea", "740af67107192089", "ae613d827131e84d",
    "7b0c08adef9d57ba", "8875dab6167339b5", "c53a923104d9f7d2", "38294a29488cd374", "5c3c8818c243443c",
    "753fe9206902448f", "a519ed190a09b163", "eea55c2209b395e4", "57e89b7bc849ecab", "1d3516083c0b4122",
    "0e96050ea9a95dc5", "f4aa6c8c5da70129", "f9bfead076f9cbcb", "bd0cd2a910bc4cb4", "51b7e75b698db3bd",
]


def _hull_cases():
    """Point clouds inside and across the image border (clipped lines), with collinear runs."""
    rng = np.random.default_rng(2024)
    for t in range(40):
        n = int(rng.integers(3, 478))
        centre = rng.uniform(-20, 244, 2)
        radius = rng.uniform(2, 60, 2)
        pts = centre + rng.normal(size=(n, 2)) * radius
        if t % 3 == 0:
            pts = rng.uniform(-30, 260, (3 + n % 5, 2))
        if t % 5 == 0:
            pts = np.round(pts / 5) * 5
        yield pts


def test_hull_masks_are_opencvs_pixel_for_pixel():
    from zoo.face.polyfill import hull_mask

    digests = [hashlib.sha256(hull_mask(p, 224, 224).tobytes()).hexdigest()[:16] for p in _hull_cases()]
    assert digests == CV2_DIGESTS


# -- the contract ---------------------------------------------------------------------------------------------------
def test_tokens_carry_the_official_names_and_slot_ids(tiny):
    x = tiny.example_input(3, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = tiny.encode(x)
        single = tiny.encode(x[1:2])
    shapes = {"pose_params": (3, 3), "cam": (3, 3), "shape_params": (3, 300), "expression_params": (3, 50),
              "eyelid_params": (3, 2), "jaw_params": (3, 3), "tokens": (3, 4, 16)}
    assert {k: tuple(tokens.meta[k].shape) for k in shapes} == shapes
    assert tokens.ids.tolist() == [[0, 1, 2, 3]] * 3 and tokens.layout == (4,)
    assert (tokens.meta["eyelid_params"] >= 0).all() and (tokens.meta["eyelid_params"] <= 1).all()
    assert (tokens.meta["jaw_params"][:, 0] >= 0).all() and (tokens.meta["jaw_params"][:, 1:].abs() <= 0.2).all()
    assert torch.allclose(single.meta["tokens"], tokens.meta["tokens"][1:2], atol=1e-5)
    assert torch.equal(tiny.embed(tokens), tokens.meta["tokens"])
    assert tiny.is_discrete is False and tiny.codebook.size == 4 and tiny.codebook.dim == 16
    for call in (tiny.codebook.embeddings, lambda: tiny.codebook.lookup(tokens.ids)):
        with pytest.raises(ContinuousTokensError, match="continuous"):
            call()
    edited = zoo.Tokens(tokens.ids.flip(1), tokens.lengths, tokens.layout, tokens.meta)
    with pytest.raises(ValueError, match=r"slot numbers \[0, 1, 2, 3\]"):
        tiny.decode(edited)
    foreign = zoo.Tokens(tokens.ids, layout=(4,), meta={"tokens": tokens.meta["tokens"]})
    with pytest.raises(ValueError, match=r"meta\['pose_params'\].*another tokenizer"):
        tiny.decode(foreign)


def test_flame_takes_a_params_dict_ignoring_extras_with_missing_eyelids_as_zeros(tiny):
    x = tiny.example_input(2, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        tokens = tiny.encode(x)
        full = tiny.flame(tokens.meta)  # extra keys (cam, tokens, image_size) ignored
        params = {k: tokens.meta[k] for k in GEOMETRY}
        params["eyelid_params"] = torch.zeros(2, 2)
        zeros = tiny.flame(params)
        missing = tiny.flame({k: v for k, v in params.items() if k != "eyelid_params"})
    assert set(full) >= {"vertices", "landmarks_fan", "landmarks_fan_3d", "landmarks_mp"}
    assert full["landmarks_fan"].shape == (2, 68, 3) and full["landmarks_mp"].shape == (2, 105, 3)
    assert torch.equal(zeros["vertices"], missing["vertices"])
    with pytest.raises(ValueError, match="shape_params"):
        tiny.flame({"expression_params": params["expression_params"]})


def test_generate_render_and_decode_words(tiny):
    x = tiny.example_input(2, torch.Generator().manual_seed(2))
    with torch.inference_mode():
        tokens = tiny.encode(x)
        drawn = tiny.render(tokens)
        masked, keep = tiny.masked_input(x, drawn["image"], transformed_vertices=drawn["transformed_vertices"])
        out = tiny.generate(tokens, rendered=drawn["image"], masked=masked)
        assert torch.equal(out, tiny.generate(tokens.meta["tokens"], rendered=drawn["image"], masked=masked))
        assert torch.equal(tiny.decode(tokens, image=x), out)
        black = tiny.decode(tokens)
    assert out.shape == black.shape == (2, 3, 224, 224) and ((out > 0) & (out < 1)).all()
    assert drawn["mask"].sum() > 0 and (keep <= 1 - drawn["mask"]).all()  # the drawn face is always cut out
    with pytest.raises(ValueError, match=r"tokens \[B, 4, 16\]"):
        tiny.generate(tokens.meta["tokens"][:, :3], rendered=drawn["image"], masked=masked)
    with pytest.raises(ValueError, match="masked image values must lie in"):
        tiny.generate(tokens, rendered=drawn["image"], masked=masked * 3 + 1)
    with pytest.raises(ValueError, match="image has 1 samples"):
        tiny.decode(tokens, image=x[:1])


def test_tokens_survive_files_and_keep_their_hull_points(tiny, tmp_path):
    x = tiny.example_input(1, torch.Generator().manual_seed(4))
    points = torch.tensor([[[60.0, 50.0], [170.0, 55.0], [165.0, 200.0], [58.0, 190.0]]])
    with torch.inference_mode():
        tokens = tiny.encode(x, hull_points=points)
        tokens.save(tmp_path / "t.safetensors")
        back = zoo.Tokens.load(tmp_path / "t.safetensors")
        assert torch.equal(tiny.decode(back, image=x), tiny.decode(tokens, image=x))
        _, keep = tiny.masked_input(x, torch.zeros_like(x), hull_points=points)
    assert keep[0, 0, 120, 110] == 0 and keep[0, 0, 5, 5] == 1  # inside the (dilated) hull: cut out
    with pytest.raises(ValueError, match="hull_points must be"):
        tiny.encode(x, hull_points=points[..., :1])


def test_identity_swap_and_expression_transfer(tiny):
    """The paper's edits: a's geometry with b's appearance tokens; a with b's expression, jaw and eyelids."""
    gen = torch.Generator().manual_seed(5)
    xa, xb = tiny.example_input(1, gen), tiny.example_input(1, gen)
    with torch.inference_mode():
        a, b = tiny.encode(xa), tiny.encode(xb)
        swapped = swap_appearance(a, b)
        assert torch.equal(swapped.meta["tokens"], b.meta["tokens"])
        assert all(torch.equal(swapped.meta[k], a.meta[k]) for k in GEOMETRY)
        drawn = tiny.render(a)
        masked, _ = tiny.masked_input(xa, drawn["image"], transformed_vertices=drawn["transformed_vertices"])
        assert torch.equal(tiny.decode(swapped, image=xa),
                           tiny.generate(b.meta["tokens"], rendered=drawn["image"], masked=masked))
        moved = transfer_expression(a, b)
        for key in ("expression_params", "jaw_params", "eyelid_params"):
            assert torch.equal(moved.meta[key], b.meta[key])
        for key in ("pose_params", "cam", "shape_params", "tokens"):
            assert torch.equal(moved.meta[key], a.meta[key])
        expected = dict(a.meta, **{k: b.meta[k] for k in ("expression_params", "jaw_params", "eyelid_params")})
        assert torch.equal(tiny.flame(moved)["vertices"], tiny.flame(expected)["vertices"])
    with pytest.raises(ValueError, match="1 or 1"):
        swap_appearance(a, zoo.Tokens.cat([b, b]))


# -- converter ------------------------------------------------------------------------------------------------------
@needs_fixture
def test_converter_round_trips_and_refuses_what_it_does_not_know(official):
    from zoo.registry import get_converter

    converter = get_converter("teaser")
    raw = torch.load(str(FIXTURE / "teaser_fixture.pt"), weights_only=True)
    back = converter.to_official(official)
    assert set(back) == set(raw) and all(torch.equal(back[k], raw[k]) for k in raw)
    # SMIRK's naming of the same layout converts to the same model
    smirk = {k.replace("teaser_", "smirk_", 1): v for k, v in raw.items()}
    assert converter.infer_kwargs(converter.read(smirk)) == converter.infer_kwargs(converter.read(raw))
    with pytest.raises(ValueError, match="outside teaser_encoder / teaser_generator"):
        converter.convert_state_dict(converter.read(dict(raw, **{"teaser_extra.x": torch.zeros(1)})), official)
    with pytest.raises(ValueError, match="missing keys"):
        converter.convert_state_dict(converter.read({k: v for k, v in raw.items() if "conv_stem" not in k}), official)
    with pytest.raises(ValueError, match="SMIRK's release is a different network"):
        unet = {k: v for k, v in smirk.items() if "token" not in k}
        unet["smirk_generator.encoder1.enc1conv1.weight"] = torch.zeros(4, 6, 3, 3)
        converter.infer_kwargs(converter.read(unet))
    with pytest.raises(ValueError, match="encoder-only"):
        converter.infer_kwargs(converter.read({k: v for k, v in raw.items() if k.startswith("teaser_encoder.")}))
    with pytest.raises(ValueError, match="flat dict of tensors"):
        converter.read(dict(raw, epoch=3))
    with pytest.raises(ValueError, match="neither"):
        converter.read({"encoder.x": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="TEASER.pt"):
        zoo.from_official("teaser", checkpoint=FIXTURE / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no FLAME file"):
        converter.read(raw, flame=FIXTURE / "nope.pkl")


@needs_fixture
def test_registered_release_matches_what_the_full_size_layout_implies():
    import json

    from zoo.registry import get_converter, get_spec

    layout = json.loads((FIXTURE / "official_full_size_keys.json").read_text())["keys"]
    state = {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in layout}
    converter = get_converter("teaser")
    inferred = converter.infer_kwargs(converter.read(state))
    registered = {k: v for k, v in get_spec("teaser").kwargs.items() if k in inferred}
    assert inferred == registered
    with torch.device("meta"):
        model = zoo.create("teaser")
    ours = converter.convert_state_dict(converter.read(state), model)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(converter.to_official(model)) == {k for k, _, _ in layout}
    assert sum(v.numel() for k, v in model.state_dict().items() if v.is_floating_point()) == 89_901_356


# -- the face pipeline ----------------------------------------------------------------------------------------------
def test_crop_matches_the_official_skimage_warp():
    skimage = pytest.importorskip("skimage", reason="scikit-image's warp is the reference of the official crop")
    from skimage.transform import estimate_transform, warp

    from zoo.face.crop import crop_face

    rgb = skimage.data.astronaut()
    gen = np.random.default_rng(0)
    landmarks = np.array([190.0, 110.0]) + gen.normal(size=(478, 2)) * [25, 35]
    left, top = landmarks.min(0)
    right, bottom = landmarks.max(0)
    size = int((right - left + bottom - top) / 2 * 1.4)
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    corners = np.array([centre - size / 2, [centre[0] - size / 2, centre[1] + size / 2],
                        [centre[0] + size / 2, centre[1] - size / 2]])
    tform = estimate_transform("similarity", corners, np.array([[0, 0], [0, 223], [223, 0]]))
    reference = warp(rgb, tform.inverse, output_shape=(224, 224), preserve_range=True).astype(np.uint8)
    crop, transform, points = crop_face(rgb, landmarks)
    assert np.array_equal((crop * 255).round().byte().permute(1, 2, 0).numpy(), reference)
    assert np.abs(transform - tform.params).max() < 1e-9
    assert np.abs(points - tform(landmarks)).max() < 1e-9


def test_read_face_finds_a_face_and_says_when_there_is_none(tmp_path):
    pytest.importorskip("skimage", reason="the test photos come from scikit-image")
    from PIL import Image
    from skimage import data

    from zoo.face.crop import NoFaceFoundError, _choose, read_face

    try:
        _choose("auto")
    except RuntimeError as err:
        pytest.skip(str(err))
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    face = read_face(tmp_path / "astronaut.png")
    assert face.image.shape == (1, 3, 224, 224) and 0 <= face.image.min() and face.image.max() <= 1
    centre = face.landmarks[0].mean(0)
    assert (abs(centre - 112) < 30).all()  # the face sits in the middle of the crop
    if face.hull_points is not None:
        assert face.hull_points.shape == (1, 478, 2)
    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(NoFaceFoundError, match="no face found"):
        read_face(tmp_path / "grey.png")
