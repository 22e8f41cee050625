"""The first pass's extensions, carried into the second pass as the built-in Hires fix does.

The second pass is an img2img job of its own. The always-on extensions that shaped
the first pass (ControlNet, Dynamic Thresholding, FreeU, Forge's Integrated
scripts, regional prompting, ...) run in it with their own arguments from the
first pass, so the picture keeps them exactly when it gets its detail. Kept out:

- this extension (the pass is ours);
- the extensions the "kept out" setting names: those that make or finish images
  themselves (ADetailer, face swappers) or rewrite the prompt the pass repeats;
- the hooks that finish a single image (`FINISHING_HOOKS`): the outer job runs
  them on the upscaled image, so running them inside the pass too would apply
  them twice. The pass never saves samples or grids (`do_not_save_*`).
"""

from __future__ import annotations

import re
from contextlib import suppress
from pathlib import Path
from typing import Any

#: The setting (a comma-separated list of script titles or extension folder names).
KEPT_OUT_OPTION = "hires_upscale_scripts_kept_out"
#: They make or finish images themselves, or re-roll the prompt the pass must repeat.
DEFAULT_KEPT_OUT = "ADetailer, ReActor, roop, FaceSwapLab, AnimateDiff, Dynamic Prompts"
#: Script hooks that work on one finished image; the outer job runs them on our result.
FINISHING_HOOKS = ("postprocess_image", "postprocess_maskoverlay", "postprocess_image_after_composite")

#: A version at the end of a title: " v2.17.1", " 1.0".
_VERSION = re.compile(r"\s+v?\d[\w.\-]*$")
_OUR_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "hires_upscale.py"


def kept_out_names(setting: str) -> list[str]:
    return [name.strip().casefold() for name in setting.split(",") if name.strip()]


def script_names(script: Any) -> set[str]:
    """What a user may call a script in the setting: its title, its file's name, its extension's folder."""
    names = set()
    with suppress(Exception):  # a broken title() must not break the pass
        names.add(str(script.title()).strip().casefold())
    filename = getattr(script, "filename", None)
    if filename:
        path = Path(filename)
        names.update({path.stem.casefold(), path.parent.parent.name.casefold()})
    return names


def is_kept_out(script: Any, kept_out: list[str]) -> bool:
    """Named in the setting: by a whole name, or by a title without its version ("Dynamic Prompts v2.17")."""
    names = {_VERSION.sub("", name) for name in script_names(script)} | script_names(script)
    return any(entry in names for entry in kept_out)


def is_ours(script: Any) -> bool:
    filename = getattr(script, "filename", None)
    try:
        return filename is not None and Path(filename).resolve() == _OUR_SCRIPT
    except OSError:
        return False


def carried_scripts(outer: Any, setting: str) -> list[Any]:
    """The first pass's always-on scripts that run in the second pass, in the first pass's order."""
    kept_out = kept_out_names(setting)
    return [s for s in getattr(outer, "alwayson_scripts", None) or []
            if not is_ours(s) and not is_kept_out(s, kept_out)]


def _skip(*args: Any, **kwargs: Any) -> None:
    return None


def empty_runner() -> Any:
    """A script runner with no scripts, for a second pass that runs none (an existing image's):
    A1111 takes `p.scripts = None` for that, reForge's processing reads `p.scripts` unguarded."""
    from modules import scripts

    return scripts.ScriptRunner()


def second_pass_runner(outer: Any, setting: str) -> Any | None:
    """A script runner for the second pass's img2img: the carried scripts, with their arguments
    where they are in the first pass's `script_args` (each script keeps its `args_from/args_to`).
    None when the first pass ran without scripts (then so does the second)."""
    if outer is None:
        return None
    from modules import scripts

    runner = scripts.ScriptRunner()
    carried = carried_scripts(outer, setting)
    runner.alwayson_scripts = carried
    runner.scripts = list(carried)
    # extensions find each other by title (ControlNet's external code, for one)
    runner.title_map = {title: script for title, script in (getattr(outer, "title_map", None) or {}).items()
                        if script in carried}
    for hook in FINISHING_HOOKS:
        setattr(runner, hook, _skip)
    return runner
