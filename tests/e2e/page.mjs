// End to end in Debian's Chromium against a running WebUI with this extension:
//   node tests/e2e/page.mjs URL OUTDIR
// Opens txt2img, opens the accordion, picks a Latent upscaler at denoise 0.3 and expects the
// warning, types 1000 as width and expects 1024, switches to the dark theme, then generates
// once at 64x64 with the accordion on and expects a 128x128 image in the gallery. Screenshots
// go to OUTDIR. Prints one JSON line with what it saw; exits non-zero on the first failure.
import { launch, open, pick, setNumber } from "./lib.mjs";

const [url, out] = process.argv.slice(2);
const seen = {};
const browser = await launch();

try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    const accordion = await open(page, `${url}/?__theme=light`);
    // Nothing is watched while our controls are off screen: the accordion closed, the other tab hidden.
    const watching = () => page.evaluate(() => [HiresUpscale.watching.txt2img(), HiresUpscale.watching.img2img()]);
    await page.waitForTimeout(500);
    seen.watching_closed = await watching();
    await accordion.locator(".label-wrap").first().click();
    await page.locator("#hires_upscale_txt2img_upscaler").waitFor({ state: "visible" });
    await page.waitForFunction(() => HiresUpscale.watching.txt2img(), null, { timeout: 10000 });
    seen.watching_open = await watching();

    // A latent upscaler at the default denoise 0.3: the page warns at once, no round trip.
    await pick(page, "hires_upscale_txt2img_upscaler", "Latent");
    const warning = page.locator("#hires_upscale_txt2img_advice [data-code=latent_low_denoise]");
    await warning.waitFor({ timeout: 10000 });
    seen.latent_warning = await warning.innerText();
    await accordion.screenshot({ path: `${out}/page-latent-warning.png` });

    // Sizes snap to multiples of 64 when typed. The first pass is 512x512 (Forge's default is 512x640).
    await setNumber(page, "txt2img_width", 512);
    await setNumber(page, "txt2img_height", 512);
    await page.locator("#hires_upscale_txt2img_resize_mode label", { hasText: "size" }).click();
    await page.locator("#hires_upscale_txt2img_width").waitFor({ state: "visible" });
    await setNumber(page, "hires_upscale_txt2img_width", 1000);
    await page.waitForFunction(() =>
        document.querySelector("#hires_upscale_txt2img_width input[type=number]").value === "1024", null,
        { timeout: 10000 });
    seen.snapped_width = await page.locator("#hires_upscale_txt2img_width input[type=number]").inputValue();
    seen.size_preview = await page.locator("#hires_upscale_txt2img_advice .hires-upscale-size").innerText();

    // The same accordion in the dark theme.
    const dark = await open(page, `${url}/?__theme=dark`);
    await dark.locator(".label-wrap").first().click();
    await pick(page, "hires_upscale_txt2img_upscaler", "Latent");
    await page.locator("#hires_upscale_txt2img_advice [data-code=latent_low_denoise]").waitFor({ timeout: 10000 });
    seen.dark = await page.evaluate(() => document.body.classList.contains("dark"));
    await dark.screenshot({ path: `${out}/page-dark.png` });

    // Generate once at 64x64 with the accordion on: the gallery shows the 128x128 result.
    await pick(page, "hires_upscale_txt2img_upscaler", process.env.HU_MODEL || "4x-TestRRDB");
    await setNumber(page, "hires_upscale_txt2img_hires_steps", 2);
    await setNumber(page, "txt2img_width", 64);
    await setNumber(page, "txt2img_height", 64);
    await setNumber(page, "txt2img_steps", 2);
    await page.locator("#txt2img_prompt textarea").fill("a lighthouse at dusk");
    await page.locator("#txt2img_generate").click();
    const image = page.locator("#txt2img_gallery img").first();
    await image.waitFor({ timeout: 600000 });
    await page.waitForFunction(() => {
        const img = document.querySelector("#txt2img_gallery img");
        return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 600000 });
    seen.gallery_size = await image.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
    await page.screenshot({ path: `${out}/page-generated.png` });
    console.log(JSON.stringify(seen));
} finally {
    await browser.close();
}
