from __future__ import annotations

import os

import pytest
from conftest import noise_image

from hires_upscale.folders import OutputClashError, PathNotAllowedError, image_files, plan_jobs, resolve_inside


@pytest.fixture
def roots(tmp_path):
    allowed = tmp_path / "outputs"
    (allowed / "day").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.png").write_bytes(b"x")
    return tmp_path, allowed


def test_paths_inside_the_roots_resolve(roots):
    base, allowed = roots
    assert resolve_inside(allowed / "day", [allowed]) == (allowed / "day").resolve()
    assert resolve_inside("outputs/day", [allowed], base=base) == (allowed / "day").resolve()


@pytest.mark.parametrize("escape", ["outputs/../secret/key.png", "/etc/passwd", "secret"])
@pytest.mark.reliability(area="Folders", tried="'..', absolute paths and siblings outside the allowed folders",
                         expected="PathNotAllowedError")
def test_escapes_are_refused(roots, escape):
    base, allowed = roots
    with pytest.raises(PathNotAllowedError, match="outside the allowed folders"):
        resolve_inside(escape, [allowed], base=base)


@pytest.mark.reliability(area="Folders", tried="a symlink inside an allowed folder pointing out",
                         expected="PathNotAllowedError")
def test_symlinks_pointing_out_are_refused(roots):
    base, allowed = roots
    os.symlink(base / "secret", allowed / "innocent")
    with pytest.raises(PathNotAllowedError):
        resolve_inside(allowed / "innocent" / "key.png", [allowed])


def test_image_files_skip_hidden_and_other_files(tmp_path):
    for name in ("b.png", "a.JPG", ".a.png.tmp", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in image_files(tmp_path)] == ["a.JPG", "b.png"]


@pytest.mark.reliability(area="Folders", tried="two inputs with one output name; output folder = input folder",
                         expected="refused before any work")
def test_jobs_refuse_clashes_and_writing_over_inputs(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        noise_image(4, 4).save(tmp_path / folder / "same.png")
    jobs = plan_jobs([tmp_path / "x" / "same.png"], tmp_path / "out")
    assert jobs[0].output == tmp_path / "out" / "same.png"
    with pytest.raises(OutputClashError, match="would both write"):
        plan_jobs([tmp_path / "x" / "same.png", tmp_path / "y" / "same.png"], tmp_path / "out")
    with pytest.raises(OutputClashError, match="would replace its input"):
        plan_jobs([tmp_path / "x" / "same.png"], tmp_path / "x")
