"""Run a real AUTOMATIC1111 WebUI with this extension, on the CPU, on loopback.

The WebUI is the one in SD_WEBUI_ROOT (or ~/stable-diffusion-webui): a checkout
with its venv. Nothing is written into it: the extension is linked into a
temporary --data-dir, and the checkpoint and ESRGAN model live in folders of
their own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import models  # noqa: E402

#: Flags that run the WebUI on a machine without a GPU (docs/architecture.md).
CPU_FLAGS = ["--skip-torch-cuda-test", "--use-cpu", "all", "--no-half", "--precision", "full", "--api",
             "--skip-version-check", "--no-download-sd-model", "--skip-prepare-environment",
             "--server-name", "127.0.0.1"]
ESRGAN_NAME = "4x-TestRRDB"
#: A model saved by plain torch.save, whose newer archive entries the WebUI's safe unpickler refuses.
REJECTED_NAME = "4x-Rejected"
CHECKPOINT_RECIPE = "r3"
#: A second checkpoint (the first one's weights, the UNet's output layer changed) for "Hires checkpoint".
SECOND_CHECKPOINT = "second-sd15"
#: Test-only extensions linked in beside ours.
TEST_EXTENSIONS = ("faults_extension", "recorder_extension")
START_TIMEOUT = 600
#: What A1111 (v1.6-v1.10) and Forge print once start-up, API included, is done.
STARTED_LINE = "Startup time:"


def webui_root() -> tuple[Path | None, str]:
    """The WebUI to test against, or None and the reason there is none."""
    configured = os.environ.get("SD_WEBUI_ROOT")
    root = Path(configured).expanduser() if configured else Path.home() / "stable-diffusion-webui"
    source = "SD_WEBUI_ROOT" if configured else "~/stable-diffusion-webui (SD_WEBUI_ROOT is unset)"
    if not (root / "launch.py").is_file():
        return None, f"no WebUI checkout at {root} ({source})"
    if not (root / "venv" / "bin" / "python").is_file():
        return None, f"the WebUI at {root} has no venv/bin/python: run its webui.sh once to make it"
    return root, ""


def webui_version(root: Path) -> str:
    done = subprocess.run(["git", "describe", "--tags", "--always"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def hf_cache() -> Path | None:
    """The offline CLIP tokenizer files (shared/hf-cache beside the checkout)."""
    for candidate in (os.environ.get("HIRES_UPSCALE_HF_CACHE"), REPO.parent / "shared" / "hf-cache",
                      Path("/work/shared/hf-cache")):
        if candidate and (Path(candidate) / "hub").is_dir():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint(root: Path, env: dict[str, str]) -> Path:
    """A random-weight SD1.5 checkpoint, made once per WebUI version and kept in ~/.cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sd-webui-hires-upscale-tests"
    # The folder changes with the recipe in make_checkpoint.py, so an old file is never reused, nor
    # listed beside the new ones (it is the WebUI's --ckpt-dir).
    path = cache / webui_version(root) / CHECKPOINT_RECIPE / "random-sd15.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(root / "venv" / "bin" / "python"), str(Path(__file__).with_name("make_checkpoint.py")),
                        str(path)], cwd=root, env=env, check=True, timeout=900)
    return path


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


def image_b64(image: Image.Image, **png) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **png)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


@dataclass
class Response:
    status: int
    body: object

    def json(self):
        return self.body


class WebUI:
    """One running WebUI; `post`/`get` talk to it."""

    def __init__(self, root: Path, workdir: Path, extra_models: dict[str, object] | None = None) -> None:
        """`extra_models`: more upscaler models (name -> torch module) for the ESRGAN folder."""
        self.root = root
        self.extra_models = extra_models or {}
        self.workdir = workdir
        self.version = webui_version(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.esrgan_dir = workdir / "ESRGAN"
        self.log_path = workdir / "webui.log"
        #: faults the test extension injects (tests/webui/faults_extension), written by `inject`
        self.faults_path = workdir / "faults.json"
        #: what the recorder extension saw (tests/webui/recorder_extension), read by `recorded`
        self.record_path = workdir / "record.jsonl"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        hf_home = self.workdir / "hf-home"
        source = hf_cache()
        if source is not None and not hf_home.exists():
            shutil.copytree(source, hf_home)  # the WebUI writes into HF_HOME; shared/ is read-only
        return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "HIRES_UPSCALE_TEST_FAULTS": str(self.faults_path),
                "HIRES_UPSCALE_TEST_RECORD": str(self.record_path)}

    def start(self) -> None:
        env = self.env()
        ckpt = checkpoint(self.root, env)
        second_checkpoint(ckpt)
        (self.data_dir / "extensions").mkdir(parents=True, exist_ok=True)
        links = {"sd-webui-hires-upscale": REPO,
                 **{f"hires-upscale-test-{name}": REPO / "tests" / "webui" / name for name in TEST_EXTENSIONS}}
        for name, target in links.items():
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
        command = [str(self.root / "venv" / "bin" / "python"), "launch.py", *CPU_FLAGS, "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--ckpt-dir", str(ckpt.parent),
                   "--esrgan-models-path", str(self.esrgan_dir)]
        log = open(self.log_path, "w")  # noqa: SIM115 - the server writes to it while it runs
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the WebUI exited with {self.process.returncode}:\n{self.log_tail()}")
            # No request before the WebUI says it is up: one that reaches the app while it still adds
            # its API middleware makes it fail ("Cannot add middleware after an application has started").
            if STARTED_LINE in self.log_path.read_text(errors="replace"):
                try:
                    if self.get("/hires-upscale/v1/options").status == 200:
                        return
                except OSError:
                    pass
            time.sleep(1)
        raise RuntimeError(f"the WebUI did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def run_installers(self, env: dict[str, str]) -> None:
        """Run the extensions' install.py the way the WebUI's launcher does (our flags skip that step)."""
        code = ("import sys\n"
                f"sys.argv = ['launch.py', '--data-dir', {str(self.data_dir)!r}]\n"
                "from modules import launch_utils\n"
                "launch_utils.run_extensions_installers(settings_file=launch_utils.args.ui_settings_file)\n")
        subprocess.run([str(self.root / "venv" / "bin" / "python"), "-c", code], cwd=self.root, env=env,
                       check=True, timeout=900)

    def inject(self, *faults: dict) -> None:
        """Arm faults in the test extension (see its docstring); each fires once unless `times` says."""
        self.faults_path.write_text(json.dumps(list(faults)))

    def faults_left(self) -> list[dict]:
        return [f for f in json.loads(self.faults_path.read_text()) if f.get("times", 1) > 0]

    def recorded(self) -> list[dict]:
        """What the recorder extension saw since the last call (which empties its record)."""
        try:
            lines = self.record_path.read_text().splitlines()
        except OSError:
            return []
        self.record_path.write_text("")
        return [json.loads(line) for line in lines if line]

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
                 timeout: float = 900) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return Response(reply.status, json.loads(reply.read() or b"null"))
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text.decode(errors="replace")
            return Response(error.code, payload)

    def get(self, path: str) -> Response:
        return self._request("GET", path, timeout=30)

    def post(self, path: str, body: object | None = None, raw: bytes | None = None) -> Response:
        return self._request("POST", path, body, raw)


def serve() -> None:
    """`python tests/webui/harness.py`: run the test WebUI until Ctrl-C (for screenshots and poking)."""
    import tempfile

    root, why_not = webui_root()
    if root is None:
        raise SystemExit(why_not)
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the WebUI too, not only this script
    with tempfile.TemporaryDirectory(prefix="hires-upscale-webui-") as workdir:
        server = WebUI(root, Path(workdir))
        try:
            server.start()
            print(f"WebUI {server.version} with sd-webui-hires-upscale at {server.url} (Ctrl-C stops it)", flush=True)
            server.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    serve()
