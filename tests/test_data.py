"""swiftlearn.data: layout checks, download, datasets, transforms, decoded cache, augmentation."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swiftlearn import data as D


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return D.synthetic_imagenette(tmp_path_factory.mktemp("fake") / "imagenette2-fake",
                                  per_class=3, size=40, val_per_class=2)


def _copy(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / root.name
    shutil.copytree(root, dest)
    return dest


# --- locating and checking roots ---------------------------------------------------------------

def test_find_root_explicit_and_env(fake_root, monkeypatch, tmp_path):
    assert D.find_root(fake_root) == fake_root
    monkeypatch.setenv("SWIFTLEARN_DATA", str(fake_root))
    assert D.find_root() == fake_root
    monkeypatch.setenv("SWIFTLEARN_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert D.find_root(required=False) is None
    with pytest.raises(FileNotFoundError, match="SWIFTLEARN_DATA"):
        D.find_root()


def test_check_root_lists_what_is_missing(fake_root, tmp_path):
    assert D.check_root(fake_root) == fake_root
    partial = _copy(fake_root, tmp_path)
    shutil.rmtree(partial / "val")
    shutil.rmtree(partial / "train" / "n03888257")
    for f in (partial / "train" / "n01440764").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError) as e:
        D.check_root(partial)
    message = str(e.value)
    assert "val/" in message and "train/n03888257/" in message
    assert "train/n01440764/ (empty)" in message
    assert "download_imagenette" in message  # says how to get it
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.check_root(tmp_path / "absent")


# --- download ---------------------------------------------------------------------------------

def _archive(fake_root: Path, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "imagenette2-fake.tgz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(fake_root, arcname="imagenette2-fake")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


class _FlakyHandler(http.server.SimpleHTTPRequestHandler):
    failures = 0  # answer this many requests with a 503 first

    def do_GET(self):  # noqa: N802 (http.server's name)
        if type(self).failures > 0:
            type(self).failures -= 1
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serve ``tmp_path / 'www'`` on 127.0.0.1; yields (folder, base url, handler class)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Handler", (_FlakyHandler,), {})

    def factory(*args, **kwargs):
        return handler(*args, directory=str(www), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_download_over_http_with_retry_md5_and_extraction(fake_root, tmp_path, http_dir):
    www, base, handler = http_dir
    archive, md5 = _archive(fake_root, tmp_path)
    shutil.copy(archive, www / archive.name)
    handler.failures = 1  # the first attempt fails, the retry succeeds
    dest = tmp_path / "data"
    root = D.download_imagenette("320", dest, url=f"{base}/{archive.name}", md5=md5, retries=2,
                                 progress=False)
    assert root == dest / "imagenette2-fake"
    assert D.check_root(root) == root
    assert (root / "noisy_imagenette.csv").is_file()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary folders left
    # already there: no network needed
    (www / archive.name).unlink()
    assert D.download_imagenette("320", dest, url=f"{base}/{archive.name}", md5=md5,
                                 progress=False) == root


def test_download_md5_mismatch_and_unreachable(fake_root, tmp_path, http_dir):
    www, base, _ = http_dir
    archive, _ = _archive(fake_root, tmp_path)
    shutil.copy(archive, www / archive.name)
    with pytest.raises(RuntimeError, match="md5 mismatch"):
        D.download_imagenette("160", tmp_path / "a", url=f"{base}/{archive.name}", md5="0" * 32,
                              retries=2, progress=False)
    assert not (tmp_path / "a" / "imagenette2-fake").exists()
    with pytest.raises(RuntimeError, match="after 1 attempts"):
        D.download_imagenette("160", tmp_path / "b", url=f"{base}/missing.tgz", retries=1,
                              progress=False)


def test_download_from_file_url_and_validation(fake_root, tmp_path):
    archive, md5 = _archive(fake_root, tmp_path)
    root = D.download_imagenette("full", tmp_path / "c", url=archive.as_uri(), md5=md5,
                                 progress=False)
    assert len(D.list_samples(root, "val")[0]) == 20
    with pytest.raises(ValueError, match="size must be one of"):
        D.download_imagenette("640", tmp_path)
    assert set(D.IMAGENETTE_URLS) == {"160", "320", "full"}
    assert all(len(md5) == 32 for _, md5 in D.IMAGENETTE_URLS.values())


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_download_never_deletes_a_folder_it_did_not_make(fake_root, tmp_path):
    archive, md5 = _archive(fake_root, tmp_path)
    dest = tmp_path / "data"
    mine = dest / "imagenette2-fake"  # the user's folder, with the archive's stem as its name
    mine.mkdir(parents=True)
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(RuntimeError, match="already exists and is not a complete Imagenette "
                                           "root.*never deletes what it did not make"):
        D.download_imagenette("320", dest, url=archive.as_uri(), md5=md5, progress=False)
    assert (mine / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in dest.iterdir()) == ["imagenette2-fake"]  # nothing fetched


def test_download_removes_a_truncated_archive_and_what_killed_calls_left(fake_root, tmp_path,
                                                                         http_dir):
    www, base, _ = http_dir
    archive, _ = _archive(fake_root, tmp_path)
    shutil.copy(archive, www / archive.name)
    dest = tmp_path / "data"
    dest.mkdir()
    # an earlier call was killed: a truncated archive without an md5 to tell, its half-written
    # download and its extraction folder
    (dest / archive.name).write_bytes(archive.read_bytes()[:2000])
    dead = _dead_pid()
    (dest / f".{archive.name}.{dead}.tmp").write_bytes(b"half")
    (dest / f".imagenette2-fake.{dead}.tmp" / "train").mkdir(parents=True)
    root = D.download_imagenette("320", dest, url=f"{base}/{archive.name}", retries=2,
                                 progress=False)
    assert D.check_root(root) == root
    assert (dest / archive.name).read_bytes() == archive.read_bytes()  # fetched anew
    assert sorted(p.name for p in dest.iterdir()) == sorted([archive.name, "imagenette2-fake"])
    # a truncated archive at the source: reported and removed, never reused
    cut = tmp_path / "cut" / archive.name
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(RuntimeError, match="truncated or not a tar archive"):
        D.download_imagenette("320", tmp_path / "other", url=cut.as_uri(), retries=1,
                              progress=False)
    assert list((tmp_path / "other").iterdir()) == []


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_download_refuses_escaping_members(tmp_path, kind):
    import io

    outside = tmp_path / "escaped.txt"
    evil = tmp_path / "imagenette2-evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        if kind in ("dotdot", "absolute"):
            info = tarfile.TarInfo("../escaped.txt" if kind == "dotdot" else str(outside))
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:  # a link out of the folder, then a file written through it
            link = tarfile.TarInfo("imagenette2-evil/link")
            link.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            link.linkname = str(outside)
            tar.addfile(link)
            info = tarfile.TarInfo("imagenette2-evil/link")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    # the data filter refuses the member, or (absolute names) strips the "/" so that it lands
    # inside the extraction folder: either way nothing lands outside
    with pytest.raises(RuntimeError, match="unsafe member|does not hold a complete"):
        D.download_imagenette("320", tmp_path / "d", url=evil.as_uri(), progress=False)
    assert not outside.exists()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [evil.name]


# --- samples, datasets, transforms ----------------------------------------------------------------

def test_list_samples_and_noisy_labels(fake_root):
    samples, wnids = D.list_samples(fake_root, "train")
    assert len(samples) == 30 and wnids == [w for w, _ in D.IMAGENETTE_CLASSES]
    clean = [y for _, y in samples]
    noisy = [y for _, y in D.list_samples(fake_root, "train", noise=50)[0]]
    assert sum(a != b for a, b in zip(clean, noisy)) == 10  # every other image moved (i = 1)
    assert [y for _, y in D.list_samples(fake_root, "val", noise=50)[0]] == \
        [y for _, y in D.list_samples(fake_root, "val")[0]]  # validation keeps true labels
    with pytest.raises(ValueError, match="noise must be one of"):
        D.list_samples(fake_root, "train", noise=3)
    with pytest.raises(ValueError, match="split"):
        D.list_samples(fake_root, "test")


def test_noisy_labels_need_the_csv(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    (root / "noisy_imagenette.csv").unlink()
    with pytest.raises(FileNotFoundError, match="noisy_imagenette.csv"):
        D.list_samples(root, "train", noise=5)
    (root / "noisy_imagenette.csv").write_text(
        "path,noisy_labels_5\ntrain/n01440764/n01440764_0.JPEG,n99999999\n")
    with pytest.raises(ValueError, match="not Imagenette's \\(n99999999\\); restore"):
        D.list_samples(root, "train", noise=5)


def test_dataset_rgb_classes_and_transforms(fake_root):
    ds = D.ImagenetteDataset(fake_root, "train")
    assert ds.classes[0] == "tench" and len(ds.classes) == 10 and len(ds) == 30
    image, label = ds[0]  # the first image is greyscale on disk
    with Image.open(ds.samples[0][0]) as raw:
        assert raw.mode == "L"
    assert image.mode == "RGB" and label == 0
    ds.transform = D.train_transform(32, auto_augment="trivialaugment")
    x, _ = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    x = D.eval_transform(32)(image)
    assert x.shape == (3, 32, 32)
    assert -3 < float(x.min()) and float(x.max()) < 3  # normalised, not 0..255
    with pytest.raises(ValueError, match="auto_augment"):
        D.train_transform(32, auto_augment="magic")


def test_corrupt_image_in_dataset_names_the_file(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    bad = root / "train" / "n01440764" / "n01440764_1.JPEG"
    bad.write_bytes(b"not a jpeg")
    ds = D.ImagenetteDataset(root, "train")
    with pytest.raises(RuntimeError, match="n01440764_1.JPEG"):
        ds[1]


# --- decoded cache -------------------------------------------------------------------------

def test_cache_builds_once_and_is_reused(fake_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    c = D.load_cached(fake_root, "train", 32, cache_dir=cache, progress=False)
    assert c.images.shape == (30, 3, 32, 32) and c.images.dtype == torch.uint8
    assert c.labels.tolist() == [y for _, y in D.list_samples(fake_root, "train")[0]]
    assert c.classes[9] == "parachute" and c.skipped == []
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob("*.tmp*"))
    # an RGB view of the greyscale first image: three equal channels
    assert torch.equal(c.images[0, 0], c.images[0, 1])

    def boom(*args):
        raise AssertionError("decoded again")

    import swiftlearn.data.cache as cache_module

    monkeypatch.setattr(cache_module, "_decode", boom)
    again = D.load_cached(fake_root, "train", 32, cache_dir=cache, progress=False)
    assert torch.equal(again.images, c.images)


def test_cache_is_invalidated_by_size_and_source_changes(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    cache = tmp_path / "cache"
    D.load_cached(root, "val", 32, cache_dir=cache, progress=False)
    D.load_cached(root, "val", 48, cache_dir=cache, progress=False)
    assert len(list(cache.glob("val-*.npy"))) == 2  # a new resolution, a new cache
    touched = root / "val" / "n01440764" / "n01440764_0.JPEG"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(touched)
    os.utime(touched, ns=(1, 1))
    c = D.load_cached(root, "val", 32, cache_dir=cache, progress=False)
    # the changed file: rebuilt, and the superseded cache removed (the 48 px one stays)
    assert len(list(cache.glob("val-32px-*.npy"))) == 1
    assert len(list(cache.glob("val-*.npy"))) == 2 and len(list(cache.glob("*.json"))) == 2
    assert c.images[0, 0].float().mean() > 240 and c.images[0, 2].float().mean() < 15


def test_cache_skips_corrupt_images_with_a_warning_or_errors(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    bad = root / "val" / "n03000684" / "n03000684_1.JPEG"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(RuntimeWarning, match=r"skipped 1 corrupt.*n03000684_1\.JPEG"):
        c = D.load_cached(root, "val", 32, cache_dir=tmp_path / "c", progress=False)
    assert len(c) == 19 and c.skipped == [str(bad)]
    assert not any("n03000684_1" in p for p in c.paths)
    with pytest.raises(RuntimeError, match="n03000684_1.JPEG"):
        D.load_cached(root, "val", 32, cache_dir=tmp_path / "c", on_corrupt="error",
                      progress=False)
    with pytest.raises(RuntimeError, match="n03000684_1.JPEG"):
        D.load_cached(root, "val", 32, cache_dir=tmp_path / "d", on_corrupt="error",
                      progress=False)
    with pytest.raises(ValueError, match="on_corrupt"):
        D.load_cached(root, "val", 32, on_corrupt="ignore")


def test_cache_build_removes_what_a_killed_build_left(fake_root, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = _dead_pid()
    stale = cache / f".train-32px-0123456789abcdef.npy.{dead}.tmp"
    stale.write_bytes(b"half an array")
    mine = cache / f".notes.{dead}.tmp"  # not a cache file name: not ours to remove
    mine.write_text("keep")
    D.load_cached(fake_root, "train", 32, cache_dir=cache, progress=False)
    assert not stale.exists() and mine.exists()


def test_cache_skips_broken_symlinks_and_scales_16_bit_images(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    folder = root / "val" / "n01440764"
    (folder / "dangling.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    (folder / "loop.JPEG").symlink_to(folder / "loop.JPEG")
    grey16 = np.full((40, 40), 32768, np.uint16)  # mid-grey in 16 bits
    Image.fromarray(grey16).save(folder / "n01440764_0.png")
    with pytest.warns(RuntimeWarning, match="skipped 2 corrupt or unreadable"):
        c = D.load_cached(root, "val", 32, cache_dir=tmp_path / "c", progress=False)
    i = c.paths.index("val/n01440764/n01440764_0.png")
    assert abs(c.images[i].float().mean().item() - 128) < 2  # not white
    assert abs(np.asarray(D.load_rgb(folder / "n01440764_0.png")).mean() - 128) < 2


def test_load_photos_scales_16_bit_images_like_the_training_data(tmp_path, monkeypatch):
    ramp = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")  # I;16, which PIL's convert clips
    monkeypatch.setenv("SWIFTLEARN_PHOTOS", str(tmp_path))
    (photo,) = D.load_photos()
    assert photo.image.shape == (48, 48, 3) and (photo.image == 255).mean() < 0.05
    want = np.repeat((ramp / 257).round()[..., None], 3, axis=-1)
    assert np.abs(photo.image.astype(float) - want).max() <= 1


def test_cache_follows_edits_to_the_noisy_labels(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    cache = tmp_path / "cache"
    a = D.load_cached(root, "train", 32, noise=50, cache_dir=cache, progress=False)
    first_cache = sorted(cache.glob("train-32px-*.npy"))
    csv_path = root / "noisy_imagenette.csv"
    lines = csv_path.read_text().splitlines()
    first = lines[1].split(",")
    first[5] = "n03888257" if first[5] != "n03888257" else "n01440764"  # noisy_labels_50
    lines[1] = ",".join(first)
    csv_path.write_text("\n".join(lines) + "\n")
    b = D.load_cached(root, "train", 32, noise=50, cache_dir=cache, progress=False)
    assert len(first_cache) == 1 and sorted(cache.glob("train-32px-*.npy")) != first_cache
    assert a.labels.tolist() != b.labels.tolist()


def test_cache_usage_and_superseded_caches_of_other_roots_stay(fake_root, tmp_path):
    cache = tmp_path / "cache"
    other = _copy(fake_root, tmp_path / "copy")
    D.load_cached(fake_root, "val", 32, cache_dir=cache, progress=False)
    D.load_cached(other, "val", 32, cache_dir=cache, progress=False)  # another root: kept
    (cache / "notes.txt").write_text("not a cache")
    folder, size, count = D.cache_usage(cache)
    assert folder == cache and count == 2
    assert size == sum(p.stat().st_size for p in cache.glob("val-*"))
    assert D.cache_usage(tmp_path / "none")[1:] == (0, 0)


def test_cache_subset(fake_root, tmp_path):
    c = D.load_cached(fake_root, "train", 32, cache_dir=tmp_path, progress=False).subset(1)
    assert len(c) == 10 and sorted(c.labels.tolist()) == list(range(10))


# --- tensor augmentation -----------------------------------------------------------------------

def _ramp(b: int = 4, size: int = 24) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32).mul(255 / (size - 1))
    return x.expand(b, 3, size, size).round().to(torch.uint8).contiguous()


def test_random_resized_crop_flip_shapes_and_determinism():
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    a = D.random_resized_crop_flip(images, 24, generator=torch.Generator().manual_seed(3))
    b = D.random_resized_crop_flip(images, 24, generator=torch.Generator().manual_seed(3))
    c = D.random_resized_crop_flip(images, 24, generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, 3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        D.random_resized_crop_flip(images[0], 24)


def test_full_crop_is_the_image_and_flip_mirrors_it():
    images = _ramp()
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    plain = D.random_resized_crop_flip(images, 24, flip=False, **full)
    torch.testing.assert_close(plain, D.normalize(images), atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(0)
    flipped = D.random_resized_crop_flip(images[:1].expand(64, -1, -1, -1), 24, generator=g,
                                         **full)
    mirrored = (flipped[:, 0, 0, 0] > flipped[:, 0, 0, -1])  # a ramp rising to the left
    assert 0 < int(mirrored.sum()) < 64  # some mirrored, some not
    torch.testing.assert_close(flipped[mirrored], plain[:1].flip(3).expand(
        int(mirrored.sum()), -1, -1, -1), atol=1e-5, rtol=0)


def test_crops_cover_the_requested_area():
    images = _ramp(256, 48)
    g = torch.Generator().manual_seed(0)
    out = D.random_resized_crop_flip(images, 48, scale=(0.25, 0.25), ratio=(1.0, 1.0),
                                     flip=False, generator=g)
    # a crop of a quarter of the area spans half of the ramp's range
    span = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) / (D.normalize(images)[0, 0, 0, -1]
                                                   - D.normalize(images)[0, 0, 0, 0])
    assert torch.allclose(span, torch.full_like(span, 0.5), atol=0.05)


def test_mix_batch_mixup_cutmix_and_off():
    x = torch.stack([torch.full((3, 16, 16), float(v)) for v in range(4)])
    # off: prob 0 or both alphas 0 leave the batch alone
    for kwargs in (dict(prob=0.0), dict(mixup_alpha=0.0, cutmix_alpha=0.0)):
        out, perm, lam = D.mix_batch(x, generator=torch.Generator().manual_seed(0), **kwargs)
        assert out is x and perm is None and lam == 1.0
    # mixup only: every pixel is lam * own + (1 - lam) * partner (the mirrored sample)
    out, perm, lam = D.mix_batch(x, 0.4, 0.0, generator=torch.Generator().manual_seed(1))
    assert perm.tolist() == [3, 2, 1, 0] and 0 < lam < 1
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    # cutmix only: a box comes from the partner, lam is the share of pixels kept
    seen_box = False
    for seed in range(20):
        out, perm, lam = D.mix_batch(x, 0.0, 1.0, generator=torch.Generator().manual_seed(seed))
        own = (out == x).all(1).float().mean(dim=(1, 2))  # share of pixels still its own
        torch.testing.assert_close(own, torch.full((4,), lam))
        assert ((out == x) | (out == x.flip(0))).all()
        seen_box |= lam < 1
    assert seen_box
    # the same generator state gives the same mix; prob is the share of mixed batches
    a = D.mix_batch(x, 0.2, 1.0, 0.5, generator=torch.Generator().manual_seed(7))
    b = D.mix_batch(x, 0.2, 1.0, 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    g = torch.Generator().manual_seed(0)
    mixed = sum(D.mix_batch(x, 0.2, 1.0, 0.3, generator=g)[1] is not None for _ in range(400))
    assert 80 < mixed < 160
    with pytest.raises(ValueError, match="prob"):
        D.mix_batch(x, prob=2.0)


def test_resize_center_and_normalize():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = D.resize_center(images, 16, crop_pct=0.5)
    assert out.shape == (2, 3, 16, 16)
    expected = (1 - torch.tensor(D.IMAGENET_MEAN)) / torch.tensor(D.IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    torch.testing.assert_close(D.normalize(images), D.normalize(images.float() / 255))
    with pytest.raises(ValueError, match="crop_pct"):
        D.resize_center(images, 16, crop_pct=0)


def test_batch_indices_epochs_and_ranks():
    a = torch.cat(D.batch_indices(50, 8, shuffle=True, seed=1, epoch=0))
    assert torch.equal(a, torch.cat(D.batch_indices(50, 8, shuffle=True, seed=1, epoch=0)))
    assert not torch.equal(a, torch.cat(D.batch_indices(50, 8, shuffle=True, seed=1, epoch=1)))
    ranks = [torch.cat(D.batch_indices(50, 8, shuffle=True, seed=1, rank=r, world_size=2))
             for r in range(2)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())
    assert all(len(b) == 8 for b in D.batch_indices(50, 8, shuffle=True, drop_last=True))
    evals = [torch.cat(D.batch_indices(51, 8, shuffle=False, rank=r, world_size=2))
             for r in range(2)]
    assert sorted(torch.cat(evals).tolist()) == list(range(51))  # every image exactly once


# --- the real data (skips without it) ------------------------------------------------------------

def test_real_imagenette_layout(imagenette_root):
    D.check_root(imagenette_root)
    train, _ = D.list_samples(imagenette_root, "train")
    val, _ = D.list_samples(imagenette_root, "val")
    if imagenette_root.name == "imagenette2-224":
        assert (len(train), len(val)) == (9469, 3925)
    noisy = D.list_samples(imagenette_root, "train", noise=50)[0]
    changed = np.mean([a[1] != b[1] for a, b in zip(train, noisy)])
    assert 0.3 < changed < 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert D.load_rgb(train[0][0]).mode == "RGB"
