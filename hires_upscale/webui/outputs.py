"""Where the extension reads and writes files in the WebUI: the folders users may name (the WebUI's
output folders and the settings' list), our output folder, and the first pass's images saved before
the upscale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modules import shared
from PIL import Image

from ..folders import resolve_inside
from ..images import open_image
from . import compat

#: The WebUI's settings that name its output folders.
_OUTPUT_FOLDER_OPTIONS = ("outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples",
                          "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids",
                          "outdir_save", "outdir_init_images")


def data_path() -> Path:
    """The WebUI's data folder (--data-dir)."""
    from modules import paths

    return Path(getattr(paths, "data_path", os.getcwd()))


def output_folders() -> list[Path]:
    """The WebUI's own output folders (settings or defaults), absolute."""
    base = data_path()
    folders = [base / "outputs"]
    for name in _OUTPUT_FOLDER_OPTIONS:
        value = getattr(shared.opts, name, "") or ""
        if value:
            folders.append(Path(value) if os.path.isabs(value) else base / value)
    return folders


def allowed_folders() -> list[Path]:
    """Where the tab and the API may read and write: the WebUI's output folders and the settings' list."""
    extra = [line.strip() for line in str(getattr(shared.opts, "hires_upscale_allowed_folders", "") or "").splitlines()]
    return output_folders() + [Path(line) for line in extra if line]


def default_output_folder() -> Path:
    configured = str(getattr(shared.opts, "hires_upscale_output_dir", "") or "").strip()
    return Path(configured) if configured else data_path() / "outputs" / "hires-upscale"


def resolve_allowed(path: str, *, also: list[Path] | None = None) -> Path:
    """A path named by a user, refused unless it is inside the allowed folders (or `also`)."""
    return resolve_inside(path, allowed_folders() + (also or []), base=data_path())


def open_allowed(path: str) -> tuple[Path, Image.Image]:
    """An image file named by a user, refused unless it is inside the allowed folders."""
    real = resolve_allowed(path)
    return real, open_image(real)


def save_first_pass(p: Any, image: Image.Image, index: int) -> None:
    """Save the image before our upscale, where and how the WebUI saves its samples."""
    if compat.saves_samples(p):
        compat.save_sample(p, image, index, suffix="-before-hires-upscale")
