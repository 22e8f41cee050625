// The page on a shared server, in Debian's Chromium: node tests/e2e/hints.mjs URL OUTDIR [USER PASSWORD]
// With USER and PASSWORD it logs in first (--gradio-auth). It opens the accordion, picks a Latent
// upscaler and expects the page's own warning, checks that the page asked nothing of our API
// routes (their --api-auth credentials are not the browser's), and opens the Hires upscale tab.
// Prints one JSON line with what it saw; exits non-zero on the first failure.
import { launch, open, pick } from "./lib.mjs";

const [url, out, user, password] = process.argv.slice(2);
const seen = { api_calls: [], failed: [] };
const browser = await launch();
try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    page.on("request", (request) => {
        if (request.url().includes("/hires-upscale/v1/")) seen.api_calls.push(request.url());
    });
    page.on("response", (response) => {
        if (response.status() >= 400) seen.failed.push(`${response.status()} ${response.url()}`);
    });
    const accordion = await open(page, url + "/", user ? [user, password] : null);
    seen.address = page.url();
    await accordion.locator(".label-wrap").first().click();
    await page.locator("#hires_upscale_txt2img_upscaler").waitFor({ state: "visible" });
    await pick(page, "hires_upscale_txt2img_upscaler", "Latent");
    const warning = page.locator("#hires_upscale_txt2img_advice [data-code=latent_low_denoise]");
    await warning.waitFor({ timeout: 20000 });
    seen.latent_warning = await warning.innerText();
    seen.hint = await page.evaluate(() => typeof titles === "undefined" ? null : titles["Tiled (low VRAM)"] || null);
    seen.family = await page.evaluate(() => HiresUpscale.options.model_family);
    await accordion.screenshot({ path: `${out}/shared-server-hints.png` });
    await page.locator("button", { hasText: "Hires upscale" }).first().click();
    await page.locator("#hires_upscale_tab_run").waitFor({ state: "visible", timeout: 20000 });
    seen.tab = true;
    console.log(JSON.stringify(seen));
} finally {
    await browser.close();
}
