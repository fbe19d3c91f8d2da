"""swiftlearn.explorers: drive every explorer from Python, check the numbers behind the pictures,
that moving a control changes the picture, and that callback errors surface."""

from __future__ import annotations

import datetime
import io
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from PIL import Image

from swiftlearn import MultiHeadSelfAttention, create_model
from swiftlearn import explorers as ex


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png), format="png")


def _photo(seed: int, size: int = 256) -> np.ndarray:
    """A structured test image: smooth colour gradients plus a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + seed)], -1)
    r, c = rng.integers(0, size // 2, 2)
    img[r:r + size // 4, c:c + size // 4] = rng.uniform(0, 1, 3)
    return (255 * img).astype(np.uint8)


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
PHOTOS = [("one", _photo(0)), ("two", _photo(1))]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()  # the machine is shared: no oversubscription
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("swiftformer_xs", num_classes=10).eval()


def _assert_drawn(explorer):
    img = _pixels(explorer.png)
    assert img.shape[0] > 150 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05, "the figure looks blank"
    assert explorer.error.value == ""
    assert explorer.readout.value.startswith("<pre>")


# ---------------------------------------------------------------- 01: attention


def test_attention_row_is_mhsa_with_identity_projections():
    e = ex.AttentionExplorer(PHOTOS, query=(3, 5))
    _assert_drawn(e)
    weights, grid, dims = e.attention_row()
    assert grid == (14, 14) and dims == (0, 64) and weights.shape == (196,)
    x = e.token_matrix()
    mhsa = MultiHeadSelfAttention(64, num_heads=1).eval()
    with torch.no_grad():
        mhsa.qkv.weight.copy_(torch.cat([torch.eye(64)] * 3))
        mhsa.qkv.bias.zero_()
        _, attn = mhsa(x, return_attention=True)  # [1, 1, N, N]
    np.testing.assert_allclose(weights, attn[0, 0, 3 * 14 + 5].numpy(), atol=1e-6)
    assert not np.allclose(weights, attn[0, 0, 3 * 14 + 6].numpy(), atol=1e-4)  # another query


def test_moving_attention_controls_changes_the_picture():
    e = ex.AttentionExplorer(PHOTOS)
    seen = {e.png}
    e.col.value = 3
    assert e.state()["col"] == 3 and "(row 7, col 3)" in e.readout.value
    seen.add(e.png)
    e.head.value = 3  # the position code only: neighbours win
    w_pos, _, dims = e.attention_row()
    assert dims == (48, 64)
    seen.add(e.png)
    spread = ex._effective_tokens(w_pos)
    e.temperature.value = 8.0  # flatter
    assert ex._effective_tokens(e.attention_row()[0]) > spread
    seen.add(e.png)
    e.photo.value = "two"
    seen.add(e.png)
    assert len(seen) == 5  # every move drew a new picture
    _assert_drawn(e)


def test_attention_learned_tokens_from_a_model(model):
    e = ex.AttentionExplorer(PHOTOS, model=model, heads=4)
    e.tokens.value = "learned (stage 3)"
    assert e.token_matrix().shape == (1, 196, 112)
    e.head.value = 1
    assert e.attention_row()[2] == (28, 56)
    _assert_drawn(e)


def test_heads_that_do_not_divide_a_token_width_are_refused_at_once():
    with pytest.raises(ValueError, match=r"heads=5 does not divide the token width D=64 "
                                         r"\(learning-free\); choose one of \[1, 2, 4, 8, 16\]"):
        ex.AttentionExplorer(PHOTOS, heads=5)
    model = create_model("swiftformer_xs", num_classes=10).eval()  # stage 3: D = 112
    with pytest.raises(ValueError, match=r"heads=32 does not divide the token width D=112 "
                                         r"\(learned \(stage 3\)\); choose one of "
                                         r"\[1, 2, 4, 8, 16\]"):
        ex.AttentionExplorer(PHOTOS, model=model, heads=32)
    e = ex.AttentionExplorer(PHOTOS, model=model, heads=8)
    for j in range(8):  # every head in the dropdown draws
        e.head.value = j
        assert e.error.value == ""


def test_attention_callback_errors_surface(monkeypatch):
    e = ex.AttentionExplorer(PHOTOS)

    def broken():
        raise ValueError("a bug in the explorer")

    monkeypatch.setattr(e, "attention_row", broken)
    with pytest.raises(ValueError, match="a bug in the explorer"):
        e.head.value = 0
    assert "ValueError" in e.error.value and "a bug in the explorer" in e.error.value
    monkeypatch.undo()
    e.head.value = -1  # a good value clears the error
    assert e.error.value == ""


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="outside the 14 x 14 grid"):
        ex.AttentionExplorer(PHOTOS, query=(14, 0))
    with pytest.raises(ValueError, match="no photos given"):
        ex.AttentionExplorer([])
    with pytest.raises(ValueError, match="formulation must be one of"):
        ex.AlphaExplorer(create_model("swiftformer_xs", num_classes=10), PHOTOS,
                         formulation="relu")


# ---------------------------------------------------------------- 02: context scores


def test_context_scores_are_the_attention_row_of_the_scorer_patch():
    ctx = ex.ContextExplorer(PHOTOS, query=(2, 9), temperature=2.0)
    att = ex.AttentionExplorer(PHOTOS, query=(2, 9), temperature=2.0)
    _assert_drawn(ctx)
    c, grid = ctx.context_scores()
    assert grid == (14, 14)
    np.testing.assert_allclose(c.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(c, att.attention_row()[0], atol=1e-6)
    before = ctx.png
    ctx.row.value = 10
    assert ctx.png != before
    assert not np.allclose(ctx.context_scores()[0], c, atol=1e-4)


# ---------------------------------------------------------------- 03: alpha


def test_alpha_matches_the_model_and_each_formulation(model):
    e = ex.AlphaExplorer(model, PHOTOS)
    _assert_drawn(e)
    assert e.state() == {"photo": "one", "stage": 4, "formulation": "normalize"}
    scores, alpha, grid = e.scores_and_alpha()
    assert grid == (7, 7) and alpha.shape == (49,)
    maps = model.attention_maps(ex._model_input(model, PHOTOS[0][1]))
    np.testing.assert_allclose(alpha, maps[3][0].flatten().numpy(), atol=1e-5)
    np.testing.assert_allclose((alpha**2).sum(), 1.0, atol=1e-5)
    pngs = {e.png}
    e.formulation.value = "softmax"
    s2, a_soft, _ = e.scores_and_alpha()
    np.testing.assert_allclose(s2, scores)  # the same scores, other weights
    np.testing.assert_allclose(a_soft, torch.from_numpy(scores).softmax(0).numpy(), atol=1e-6)
    pngs.add(e.png)
    e.formulation.value = "legacy_softmax"
    np.testing.assert_array_equal(e.scores_and_alpha()[1], np.ones(49, np.float32))
    assert "every α is 1" in e.readout.value
    pngs.add(e.png)
    e.stage.value = 2
    assert e.scores_and_alpha()[2] == (28, 28)
    pngs.add(e.png)
    assert len(pngs) == 4
    # the model itself was not changed by the toggle
    assert all(enc.attn.formulation == "normalize" for enc in model.encoders())


def test_alpha_callback_errors_surface(model, monkeypatch):
    e = ex.AlphaExplorer(model, PHOTOS)

    def broken():
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(e, "render", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        e.formulation.value = "softmax"
    assert "RuntimeError: drawing failed" in e.error.value


# ---------------------------------------------------------------- photos of your own


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_and_path_add_a_photo_and_select_it(tmp_path, model):
    e = ex.ClassifyExplorer(model, PHOTOS)
    _assert_drawn(e)
    before = e.png
    mine = _photo(7, size=300)
    e.upload.value = ({"name": "mine.png", "type": "image/png", "size": 1,
                       "content": memoryview(_png_bytes(mine)), "last_modified": NOW},)
    assert e.photo.value == "mine.png" and e.png != before
    assert e.current_image.shape == (224, 224, 3)
    path = tmp_path / "cat.png"
    Image.fromarray(_photo(8)).save(path)
    assert e.add_photo(path) == "cat.png" and e.photo.value == "cat.png"
    assert e.add_photo(str(path)) == "cat.png (2)"
    with pytest.raises(FileNotFoundError, match="no photo at"):
        e.add_photo(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="not an image"):
        e.upload.value = ({"name": "x.png", "type": "image/png", "size": 3,
                           "content": memoryview(b"not a png"), "last_modified": NOW},)
    assert "not an image" in e.error.value


def _png16_rgb(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, encoded by hand: PIL cannot write one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    h, w, _ = rgb16.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb16)  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_pngs_load_like_their_8_bit_versions(tmp_path):
    photo = _photo(3)
    grey = tmp_path / "grey16.png"
    Image.fromarray(photo[..., 0].astype(np.uint16) * 257).save(grey)
    rgb = tmp_path / "rgb16.png"
    rgb.write_bytes(_png16_rgb(photo.astype(np.uint16) * 257))
    with Image.open(grey) as im:
        assert im.mode == "I;16"  # the mode PIL's own convert("RGB") clips to white
    cases = {grey: np.repeat(photo[..., :1], 3, axis=-1), rgb: photo}
    for path, want in cases.items():
        with Image.open(path) as im:
            sources = (path, path.read_bytes(), im.copy())
        for source in sources:
            got = ex.load_image(source)
            assert got.dtype == np.uint8 and (got == 255).mean() < 0.05, "mostly white"
            assert np.abs(got.astype(int) - want).max() <= 1
    e = ex.AttentionExplorer(PHOTOS)
    assert e.add_photo(grey) == "grey16.png"
    want = ex.viz.square(cases[grey], ex.SIZE).astype(int)
    assert np.abs(e.photos["grey16.png"].astype(int) - want).max() <= 1


def test_classify_top5_is_the_model_ranking(model):
    e = ex.ClassifyExplorer(model, PHOTOS)
    top = ex.classify(model, PHOTOS[0][1], k=5)
    with torch.no_grad():
        probs = model(ex._model_input(model, PHOTOS[0][1])).softmax(-1)[0]
    assert [n for n, _ in top][0] == ex._class_names(model, 10)[int(probs.argmax())]
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert math.isclose(top[0][1], float(probs.max()), rel_tol=1e-5)
    assert len(e.text.splitlines()) == 6
    assert [n for n, _ in top] == [line.split("%")[1].strip() for line in e.text.splitlines()[1:]]


def test_classify_alpha_maps_are_the_models(model):
    e = ex.ClassifyExplorer(model, PHOTOS, stages=(2, 4))
    top, shown = e.result()
    assert top == ex.classify(model, PHOTOS[0][1], k=5)
    maps = model.attention_maps(ex._model_input(model, PHOTOS[0][1]))
    assert list(shown) == ["α, stage 2 (28x28)", "α, stage 4 (7x7)"]
    for got, s in zip(shown.values(), (2, 4)):
        np.testing.assert_allclose(got, maps[s - 1][0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="stage 5 is not among"):
        ex.ClassifyExplorer(model, PHOTOS, stages=(5,))
