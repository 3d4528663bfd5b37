"""Storing a job's provider output: pixels kept as sent, our metadata in, theirs out; and what
a killed writer leaves behind."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from bot.app import DB_NAME
from bot.images import BadProviderImage, ImageLimits, remove_stale_temp_files, store_job_images
from tests.conftest import REPO

LIMITS = ImageLimits()


def png(
    color: tuple[int, int, int], *, text: dict[str, str] | None = None, icc: bytes | None = None
) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    kwargs = {"icc_profile": icc} if icc else {}
    Image.new("RGB", (96, 64), color).save(buf, "PNG", pnginfo=info, **kwargs)
    return buf.getvalue()


def idat(png_bytes: bytes) -> bytes:
    """Every IDAT chunk (length, type, data, CRC), in order."""
    out, pos = b"", 8
    while pos < len(png_bytes):
        (length,) = struct.unpack(">I", png_bytes[pos : pos + 4])
        if png_bytes[pos + 4 : pos + 8] == b"IDAT":
            out += png_bytes[pos : pos + 12 + length]
        pos += 12 + length
    return out


async def test_provider_png_is_kept_with_our_text_and_without_theirs(tmp_path: Path) -> None:
    source = png((10, 120, 200), text={"parameters": "secret workflow of the provider"})
    files, grid = await store_job_images(
        tmp_path, [(source, {"prompt": "a café ☕ at night", "seed": "7"})], LIMITS
    )
    [stored] = files
    with Image.open(stored.path) as im:
        assert im.text == {"prompt": "a café ☕ at night", "seed": "7"}  # type: ignore[attr-defined]
        assert im.getpixel((5, 5)) == (10, 120, 200)
    # the compressed pixel data is byte-for-byte the provider's (no re-encode)
    assert idat(stored.path.read_bytes()) == idat(source)
    assert grid is not None and grid.path.suffix in (".jpg", ".webp")


async def test_png_with_icc_profile_is_converted_not_kept(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    files, _ = await store_job_images(tmp_path, [(png((1, 2, 3), icc=icc), {"seed": "1"})], LIMITS)
    with Image.open(files[0].path) as im:
        assert "icc_profile" not in im.info and im.text == {"seed": "1"}  # type: ignore[attr-defined]


async def test_damaged_provider_png_is_a_provider_fault(tmp_path: Path) -> None:
    good = png((0, 0, 0))
    with pytest.raises(BadProviderImage):
        await store_job_images(tmp_path, [(good[: len(good) // 2], {})], LIMITS)
    corrupt = bytearray(good)
    corrupt[-20] ^= 0xFF
    with pytest.raises(BadProviderImage):
        await store_job_images(tmp_path, [(bytes(corrupt), {})], LIMITS)


async def test_jpeg_output_is_stored_as_png(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), (200, 10, 10)).save(buf, "JPEG")
    files, grid = await store_job_images(
        tmp_path, [(buf.getvalue(), {"seed": "3"}), (png((9, 9, 9)), {"seed": "4"})], LIMITS
    )
    assert [f.path.suffix for f in files] == [".png", ".png"]
    assert grid is not None


def test_only_our_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    shard = tmp_path / "images" / "ab"
    shard.mkdir(parents=True)
    cutoff = time.time() - 60
    old, young = cutoff - 3600, cutoff + 30

    def touch(path: Path, mtime: float) -> Path:
        path.write_bytes(b"partial")
        os.utime(path, (mtime, mtime))
        return path

    stale = [
        touch(shard / ".tmp-k2x_9abc.png", old),
        touch(shard / ".tmp-00000000.jpg", old),
        touch(shard / ".tmp-zzzzzzzz.webp", old),
    ]
    kept = [
        touch(shard / ".tmp-q1w2e3r4.png", young),  # may be a write going on right now
        touch(shard / ".tmp-short.png", old),  # not a name the store makes
        touch(shard / ".tmp-ABCDEFGH.png", old),
        touch(shard / ".tmp-abcdefgh.txt", old),
        touch(shard / ("ab" * 32 + ".png"), old),  # a stored image
        touch(tmp_path / "images" / ".tmp-abcdefgh.png", old),  # not in a shard folder
    ]
    other = tmp_path / "images" / "notes"
    other.mkdir()
    kept.append(touch(other / ".tmp-abcdefgh.png", old))
    target = touch(tmp_path / "elsewhere.png", old)
    link = shard / ".tmp-l1nk0000.png"
    link.symlink_to(target)
    os.utime(link, (old, old), follow_symlinks=False)
    assert remove_stale_temp_files(tmp_path, cutoff) == len(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and link.is_symlink() and target.exists()
    assert remove_stale_temp_files(tmp_path / "missing", cutoff) == 0


WRITER = """
import os, sys
from pathlib import Path
from bot.images import _write_content_addressed
data_dir = Path(sys.argv[1])
print("writing", flush=True)
i = 0
while True:  # until killed: fresh bytes each time, so every write is a real one
    i += 1
    _write_content_addressed(data_dir, os.urandom(16) + bytes(8 << 20), "png")
"""


def _kill_mid_write(data_dir: Path) -> list[Path]:
    """Run the image store's own write in a child, and SIGKILL it while a temporary file of
    it is on disk."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir)], env=env, stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == b"writing\n"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                found = list((data_dir / "images").glob("*/.tmp-*"))
                if found:
                    child.send_signal(signal.SIGKILL)
                    child.wait()
                    left = list((data_dir / "images").glob("*/.tmp-*"))
                    if left:
                        return left
                    break
                time.sleep(0.001)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    raise AssertionError("never caught the writer mid-write")


def test_a_restart_removes_what_a_sigkill_left_mid_write_and_nothing_newer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    left = _kill_mid_write(data_dir)
    time.sleep(0.05)  # the kernel notes a process's start in 10 ms ticks
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env.update({"PYTHONPATH": str(REPO), "IMAGINE_PROVIDERS__OFFLINE__LATENCY_MS": "0"})
    bot = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "--data-dir",
            str(data_dir),
            "generate",
            "a fox in the snow --n 1",
            "--out",
            str(tmp_path / "out"),
            "--user",
            "alice",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Written after the bot started: not its to judge (another writer's, or its own).
    shard = left[0].parent
    young = shard / f".tmp-{uuid.uuid4().hex[:8]}.png"
    young.write_bytes(b"being written")
    out, err = bot.communicate(timeout=120)
    assert bot.returncode == 0, err.decode()
    assert not any(p.exists() for p in left)
    assert young.exists()
    assert (data_dir / DB_NAME).exists() and b"done" in out
