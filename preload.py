"""Command-line flags of the extension; the WebUI calls preload() before parsing its arguments."""


def preload(parser) -> None:
    parser.add_argument(
        "--hires-upscale-tile-size",
        type=int,
        default=None,
        help="sd-webui-hires-upscale: upscaler tile size in pixels (default: chosen from free memory)",
    )
    parser.add_argument(
        "--hires-upscale-fp32",
        action="store_true",
        help="sd-webui-hires-upscale: run upscaler models in fp32 even where fp16/bf16 is supported",
    )
