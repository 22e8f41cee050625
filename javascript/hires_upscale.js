// sd-webui-hires-upscale: hover hints for the accordion and the tab, through the WebUI's
// own `titles` table (javascript/hints.js), keyed by the label text the user sees.
(function () {
    if (typeof titles === "undefined") {
        return;
    }
    const hints = {
        "Resize by": "scale: multiply the size; size: reach a width x height; preset: a named target size",
        "When the aspect differs": "crop: fill the target and crop the overflow; fill: fit inside and extend the edges; stretch: distort to fit",
        "Hires sampler": "Sampler of the second pass; 'Same as first pass' keeps the image's own",
        "Hires schedule type": "Schedule of the second pass; 'Same as first pass' keeps the image's own",
        "Tiled (low VRAM)": "Upscale in tiles sized to free memory: for 4-8 GB cards and very large targets",
        "Tile size (0 = from free memory)": "Upscaler tile size in input pixels; smaller uses less memory and is slower",
        "Sharpen": "One gentle unsharp mask on the final image only; never before the second pass",
        "Sharpen strength": "Unsharp mask amount: 0.3 is gentle, 1.0 is strong",
    };
    for (const [label, hint] of Object.entries(hints)) {
        if (!(label in titles)) {
            titles[label] = hint;
        }
    }
})();
