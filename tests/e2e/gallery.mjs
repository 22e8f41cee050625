// ✨ under the gallery and the tab's preview of a dropped file, in Debian's Chromium:
//   node tests/e2e/gallery.mjs URL OUTDIR PICTURE
// Generates 64x64 in txt2img with the accordion off, sets 1 hires step, presses our ✨ under the
// gallery and waits for the image to become 128x128; then drops PICTURE into the Hires upscale tab
// and reads what the tab says it will use. Prints one JSON line with what it saw.
import { launch, open, setNumber } from "./lib.mjs";

const [url, out, picture] = process.argv.slice(2);
const seen = {};
const browser = await launch();

async function gallerySize(page) {
    return page.evaluate(() => {
        const img = document.querySelector("#txt2img_gallery img");
        return img && img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;
    });
}

try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    const accordion = await open(page, url + "/");
    await setNumber(page, "txt2img_width", 64);
    await setNumber(page, "txt2img_height", 64);
    await setNumber(page, "txt2img_steps", 2);
    await page.locator("#txt2img_prompt textarea").fill("a lighthouse at dusk");
    await page.locator("#txt2img_generate").click();
    await page.waitForFunction(() => {
        const img = document.querySelector("#txt2img_gallery img");
        return img && img.complete && img.naturalWidth === 64;
    }, null, { timeout: 600000 });
    seen.before = await gallerySize(page);
    // the accordion's settings are what the button uses: one hires step keeps the CPU run short
    await accordion.locator(".label-wrap").first().click();
    await setNumber(page, "hires_upscale_txt2img_hires_steps", 1);
    const button = page.locator("#hires_upscale_txt2img_gallery_upscale");
    await button.waitFor({ state: "visible", timeout: 30000 });
    await button.click();
    await page.waitForFunction(() => {
        const img = document.querySelector("#txt2img_gallery img");
        return img && img.complete && img.naturalWidth === 128;
    }, null, { timeout: 600000 });
    seen.after = await gallerySize(page);
    await page.waitForFunction(() => (document.querySelector("#html_info_txt2img") || {}).innerText
        && document.querySelector("#html_info_txt2img").innerText.includes("Hires upscale to"), null, { timeout: 60000 });
    // Gradio 3 gives an HTML block's id to its wrapper and to the content inside it
    seen.info = await page.locator("#html_info_txt2img").first().innerText();
    seen.log = await page.locator("#html_log_txt2img").first().innerText();
    await page.locator("#image_buttons_txt2img").screenshot({ path: `${out}/gallery-button.png` });
    await page.screenshot({ path: `${out}/gallery-upscaled.png` });

    // the tab: a dropped file's prompt and seed, before anything runs
    await page.locator("button", { hasText: "Hires upscale" }).first().click();
    await page.locator("#hires_upscale_tab_files input[type=file]").first().setInputFiles(picture);
    const preview = page.locator("#hires_upscale_tab_dropped table tbody tr td");
    await preview.first().waitFor({ timeout: 60000 });
    seen.preview_seed = await preview.nth(2).innerText();
    await page.waitForFunction(() => {
        const field = document.querySelector("#hires_upscale_tab_prompt textarea");
        return field && field.value.length > 0;
    }, null, { timeout: 30000 });
    // one file: its prompts fill the override fields, which open to be read and edited
    await page.locator("#hires_upscale_tab_prompt textarea").waitFor({ state: "visible", timeout: 30000 });
    seen.prompt_field = await page.locator("#hires_upscale_tab_prompt textarea").inputValue();
    await page.screenshot({ path: `${out}/tab-preview.png` });
    console.log(JSON.stringify(seen));
} finally {
    await browser.close();
}
